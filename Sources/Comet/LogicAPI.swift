import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMRPC
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The calls a comet makes to Logic (`goim.logic.Logic`). `GRPCLogicClient` is the real one; the seam lets other
/// transports or in-process Logic implementations be plugged in.
public protocol LogicAPI: Sendable {
    /// Authenticates a connection: `token` is the op 7 body unchanged, `cookie` the WebSocket Cookie header.
    func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply
    func disconnect(mid: Int64, key: String, server: String) async throws
    /// Refreshes the session in Logic's routing store.
    func heartbeat(mid: Int64, key: String, server: String) async throws
    /// Reports this comet's room counts; returns the cluster-wide counts of all rooms.
    func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32]
    /// Forwards a client packet with an operation the comet does not handle itself.
    func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws
}

/// `LogicAPI` over grpc-swift-2 (HTTP/2, plaintext), spreading calls round-robin over the configured addresses,
/// each call with a deadline (goim had none: bug 31). Nothing is compressed, not even `RenewOnline` (goim gzips it):
/// see the comment in `init`.
/// A `Service`: `run()` keeps the connections and closes them on graceful shutdown.
public final class GRPCLogicClient: LogicAPI, Service {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>

    private let clients: [Client]
    private let next = Atomic<Int>(0)
    private let timeout: Duration

    /// - Parameters:
    ///   - addresses: Logic gRPC addresses. IPv4 literals share one channel with gRPC's round-robin balancer;
    ///     host names get one channel each, used in turn.
    ///   - timeout: deadline of each call.
    public init(addresses: [HostPort], timeout: Duration, eventLoopGroup: any EventLoopGroup) throws {
        precondition(!addresses.isEmpty, "at least one Logic address is needed")
        self.timeout = timeout
        let config = HTTP2ClientTransport.Posix.Config.defaults { config in
            // No compression either way. Advertising gzip made Logic compress every reply, and grpc-swift-nio-transport
            // 2.9.2 never frees a client stream's zlib inflate state (inflateEnd is only called when a stream fails):
            // ~7 kB leaked per Connect and per Disconnect, found with heaptrack (docs/benchmarks.md). Uncompressed
            // calls also save Logic a deflate per reply. Logic (ours or goim's) accepts uncompressed RenewOnline.
            config.compression = .init(algorithm: .none, enabledAlgorithms: .none)
            config.backoff.max = .seconds(3)
            config.connection.keepalive = .init(time: .seconds(10), timeout: .seconds(3), allowWithoutCalls: true)
        }
        let serviceConfig = ServiceConfig(loadBalancingConfig: [.roundRobin])
        let literal = addresses.allSatisfy { Self.isIPv4Literal($0.host) }
        var targets: [any ResolvableTarget] = []
        if literal {
            let target: ResolvableTargets.IPv4 = .ipv4(pairs: addresses.map { (host: $0.host, port: $0.port) })
            targets.append(target)
        } else {
            for address in addresses {
                targets.append(ResolvableTargets.DNS(host: address.host, port: address.port))
            }
        }
        clients = try targets.map { target in
            GRPCClient(
                transport: try HTTP2ClientTransport.Posix(
                    target: target, transportSecurity: .plaintext, config: config, serviceConfig: serviceConfig,
                    eventLoopGroup: eventLoopGroup))
        }
    }

    static func isIPv4Literal(_ host: String) -> Bool {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for client in clients {
                    group.addTask { try await client.runConnections() }
                }
            }
        } onGracefulShutdown: {
            for client in self.clients { client.beginGracefulShutdown() }
        }
    }

    private func logic() -> Goim_Logic_Logic.Client<HTTP2ClientTransport.Posix> {
        let index = clients.count == 1 ? 0 : next.add(1, ordering: .relaxed).oldValue % clients.count
        return Goim_Logic_Logic.Client(wrapping: clients[index])
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        return options
    }

    public func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply {
        var request = Goim_Logic_ConnectReq()
        request.server = server
        request.cookie = cookie
        request.token = token
        return try await logic().connect(request, options: options)
    }

    public func disconnect(mid: Int64, key: String, server: String) async throws {
        var request = Goim_Logic_DisconnectReq()
        request.mid = mid
        request.key = key
        request.server = server
        _ = try await logic().disconnect(request, options: options)
    }

    public func heartbeat(mid: Int64, key: String, server: String) async throws {
        var request = Goim_Logic_HeartbeatReq()
        request.mid = mid
        request.key = key
        request.server = server
        _ = try await logic().heartbeat(request, options: options)
    }

    public func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32] {
        var request = Goim_Logic_OnlineReq()
        request.server = server
        request.roomCount = roomCount
        return try await logic().renewOnline(request, options: options).allRoomCount
    }

    public func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws {
        var request = Goim_Logic_ReceiveReq()
        request.mid = mid
        request.proto = proto
        _ = try await logic().receive(request, options: options)
    }
}
