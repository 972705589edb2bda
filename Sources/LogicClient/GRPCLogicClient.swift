import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMRPC
import Logging
import NIOCore
import NIOPosix
import Primitives
import RPCAuth
import ServiceLifecycle
import Synchronization

/// `LogicAPI` over grpc-swift-2 (HTTP/2, plaintext), spreading calls round-robin over the configured addresses,
/// each call with a deadline (goim had none: bug 31). Nothing is compressed, not even `RenewOnline` (goim gzips it):
/// see the comment in `init`.
/// A `Service`: `run()` keeps the connections and closes them on graceful shutdown.
public final class GRPCLogicClient: LogicAPI, Service {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>

    private let clients: [Client]
    private let next = Atomic<Int>(0)
    private let timeout: Duration
    private let logger: Logger
    /// Batches of concurrent Connects / Disconnects (`swiftgoim.logic.LogicBatch`); nil when `batchSize` is 1.
    private let connects: CallBatcher<Goim_Logic_ConnectReq, Goim_Logic_ConnectReply>?
    private let disconnects: CallBatcher<Goim_Logic_DisconnectReq, Goim_Logic_DisconnectReply>?
    /// Cleared when logic answers UNIMPLEMENTED (goim's logic): from then on, one call per connection.
    private let batchSupported = Atomic<Bool>(true)
    /// Batches in flight at once, per kind (Connect, Disconnect).
    static let batchLanes = 4

    /// - Parameters:
    ///   - addresses: Logic gRPC addresses. IPv4 literals share one channel with gRPC's round-robin balancer;
    ///     host names get one channel each, used in turn.
    ///   - timeout: deadline of each call.
    ///   - batchSize: most Connects (or Disconnects) sent in one `LogicBatch` call; 1 = goim's one call each.
    ///   - secret: the deployment's internal secret (`[rpcAuth] secret`), sent with every call; empty sends none.
    public init(
        addresses: [HostPort], timeout: Duration, batchSize: Int = 128, secret: String = "",
        eventLoopGroup: any EventLoopGroup, logger: Logger = Logger(label: "goim.comet.logic")
    ) throws {
        precondition(!addresses.isEmpty, "at least one Logic address is needed")
        self.timeout = timeout
        self.logger = logger
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
        let literal = addresses.allSatisfy { IPAddressLiteral($0.host) == .v4 }
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
                    eventLoopGroup: eventLoopGroup),
                interceptors: [SharedSecretClientInterceptor(secret: secret)])
        }
        if batchSize > 1 {
            // The batchers' send closures call back into this client; `weak` keeps them from owning it.
            let box = WeakBox<GRPCLogicClient>()
            connects = CallBatcher(lanes: Self.batchLanes, maxBatch: batchSize) { requests in
                guard let client = box.value else { throw LogicClientError.stopped }
                return await client.sendConnects(requests)
            }
            disconnects = CallBatcher(lanes: Self.batchLanes, maxBatch: batchSize) { requests in
                guard let client = box.value else { throw LogicClientError.stopped }
                return await client.sendDisconnects(requests)
            }
            box.value = self
        } else {
            connects = nil
            disconnects = nil
        }
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

    private func nextClient() -> Client {
        clients[clients.count == 1 ? 0 : next.add(1, ordering: .relaxed).oldValue % clients.count]
    }

    private func logic() -> Goim_Logic_Logic.Client<HTTP2ClientTransport.Posix> {
        Goim_Logic_Logic.Client(wrapping: nextClient())
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
        if let connects, batchSupported.load(ordering: .relaxed) {
            return try await connects.call(request)
        }
        return try await logic().connect(request, options: options)
    }

    public func disconnect(mid: Int64, key: String, server: String) async throws {
        var request = Goim_Logic_DisconnectReq()
        request.mid = mid
        request.key = key
        request.server = server
        if let disconnects, batchSupported.load(ordering: .relaxed) {
            _ = try await disconnects.call(request)
        } else {
            _ = try await logic().disconnect(request, options: options)
        }
    }

    // MARK: batches

    /// A batch of one is goim's own `Connect`; more go as one `ConnectBatch`, or one by one (concurrently) when
    /// logic does not know `LogicBatch`.
    private func sendConnects(_ requests: [Goim_Logic_ConnectReq]) async -> [Result<Goim_Logic_ConnectReply, any Error>] {
        await send(
            requests, method: "ConnectBatch",
            batch: { requests, client, options in
                var batch = Swiftgoim_Logic_ConnectBatchReq()
                batch.requests = requests
                return try await client.connectBatch(batch, options: options).results.map { ($0.status, $0.reply) }
            },
            alone: { client, request, options in try await client.connect(request, options: options) })
    }

    private func sendDisconnects(_ requests: [Goim_Logic_DisconnectReq]) async -> [Result<Goim_Logic_DisconnectReply, any Error>] {
        await send(
            requests, method: "DisconnectBatch",
            batch: { requests, client, options in
                var batch = Swiftgoim_Logic_DisconnectBatchReq()
                batch.requests = requests
                return try await client.disconnectBatch(batch, options: options).results.map { ($0.status, $0.reply) }
            },
            alone: { client, request, options in try await client.disconnect(request, options: options) })
    }

    /// Sends `requests` as one `LogicBatch` call (`batch`) when there are several and logic serves it; else each
    /// with goim's single call (`alone`). Each item's status becomes the error its single call would have thrown.
    private func send<Request: Sendable, Reply: Sendable>(
        _ requests: [Request], method: String,
        batch: (
            [Request], Swiftgoim_Logic_LogicBatch.Client<HTTP2ClientTransport.Posix>, CallOptions
        ) async throws -> [(status: Swiftgoim_Logic_CallStatus, reply: Reply)],
        alone: @escaping @Sendable (Goim_Logic_Logic.Client<HTTP2ClientTransport.Posix>, Request, CallOptions) async throws -> Reply
    ) async -> [Result<Reply, any Error>] {
        if requests.count > 1, batchSupported.load(ordering: .relaxed) {
            do {
                let results = try await batch(requests, Swiftgoim_Logic_LogicBatch.Client(wrapping: nextClient()), options)
                guard results.count == requests.count else {
                    let error = LogicClientError.badReply("\(method) of \(requests.count) calls got \(results.count) results")
                    return requests.map { _ in .failure(error) }
                }
                return results.map { $0.status.code == 0 ? .success($0.reply) : .failure(Self.error($0.status)) }
            } catch let error as RPCError where error.code == .unimplemented {
                batchNotSupported(error)
            } catch {
                return requests.map { _ in .failure(error) }
            }
        }
        let options = self.options
        return await eachAlone(requests) { client, request in try await alone(client, request, options) }
    }

    private func batchNotSupported(_ error: RPCError) {
        if batchSupported.exchange(false, ordering: .relaxed) {
            logger.notice(
                "logic does not serve swiftgoim.logic.LogicBatch (goim's logic?): one Connect/Disconnect call per connection from now on",
                metadata: ["error": "\(error)"])
        }
    }

    /// goim's one call per request, all at once.
    private func eachAlone<Request: Sendable, Response: Sendable>(
        _ requests: [Request],
        _ call: @escaping @Sendable (Goim_Logic_Logic.Client<HTTP2ClientTransport.Posix>, Request) async throws -> Response
    ) async -> [Result<Response, any Error>] {
        await withTaskGroup(of: (Int, Result<Response, any Error>).self) { group in
            for (index, request) in requests.enumerated() {
                let client = logic()
                group.addTask {
                    do { return (index, .success(try await call(client, request))) } catch { return (index, .failure(error)) }
                }
            }
            var results = [Result<Response, any Error>?](repeating: nil, count: requests.count)
            for await (index, result) in group { results[index] = result }
            return results.map { $0! }
        }
    }

    /// The error a single call would have thrown for a batch item's status.
    static func error(_ status: Swiftgoim_Logic_CallStatus) -> RPCError {
        RPCError(code: Status.Code(rawValue: Int(status.code)).flatMap(RPCError.Code.init) ?? .unknown, message: status.message)
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

    public func refreshToken(mid: Int64, key: String, server: String, token: Data) async throws -> Int64 {
        var request = Swiftgoim_Logic_RefreshTokenReq()
        request.mid = mid
        request.key = key
        request.server = server
        request.token = token
        return try await Swiftgoim_Logic_Session.Client(wrapping: nextClient()).refreshToken(request, options: options).expiresAt
    }

    public func roomHistory(room: String, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply {
        var request = Swiftgoim_Logic_RoomHistoryReq()
        request.room = room
        request.since = since
        request.epoch = epoch
        request.limit = limit
        return try await Swiftgoim_Logic_History.Client(wrapping: nextClient()).room(request, options: options)
    }

    public func midHistory(mid: Int64, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply {
        var request = Swiftgoim_Logic_MidHistoryReq()
        request.mid = mid
        request.since = since
        request.epoch = epoch
        request.limit = limit
        return try await Swiftgoim_Logic_History.Client(wrapping: nextClient()).mid(request, options: options)
    }

    public func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws {
        var request = Goim_Logic_ReceiveReq()
        request.mid = mid
        request.proto = proto
        _ = try await logic().receive(request, options: options)
    }
}

/// A weak reference that can be set after the closures holding it are made.
private final class WeakBox<Value: AnyObject & Sendable>: Sendable {
    private let storage = Mutex<WeakReference?>(nil)
    private struct WeakReference: @unchecked Sendable {  // only holds a weak reference to a Sendable object
        weak var value: Value?
    }

    var value: Value? {
        get { storage.withLock { $0?.value } }
        set { storage.withLock { $0 = WeakReference(value: newValue) } }
    }
}
