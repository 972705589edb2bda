import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMRPC
import NIOCore
import NIOPosix
import Primitives
import RPCAuth

/// The comet RPCs job makes (`goim.comet.Comet`), behind a protocol so that delivery can be
/// tested with in-memory comets as well as over gRPC.
public protocol CometRPC: Sendable {
    func pushMsg(_ request: Goim_Comet_PushMsgReq) async throws
    func broadcast(_ request: Goim_Comet_BroadcastReq) async throws
    func broadcastRoom(_ request: Goim_Comet_BroadcastRoomReq) async throws
    /// `swiftgoim.comet.Users/Push`: a push to users whose pushes keep history (swift-goim's comets only).
    func pushUsers(_ request: Swiftgoim_Comet_UserPushReq) async throws
    /// Rooms with at least one member on this comet.
    func rooms() async throws -> Set<String>
    /// Keeps the connection going until `shutdown()` (then returns once calls in flight ended).
    func run() async
    /// Refuses new calls and lets `run()` return once calls in flight ended.
    func shutdown()
}

/// Makes the client for one comet of the registry.
public typealias CometConnector = @Sendable (_ instance: CometInstanceAddress) throws -> any CometRPC

/// What a connector needs to know about a comet.
public struct CometInstanceAddress: Sendable, Hashable {
    public var hostname: String
    /// `host:port` of the comet's gRPC service.
    public var rpcAddress: String

    public init(hostname: String, rpcAddress: String) {
        self.hostname = hostname
        self.rpcAddress = rpcAddress
    }
}

/// A gRPC (HTTP/2, plaintext) client of one comet: the connection is re-made on its own after
/// failures; each call has a deadline and fails fast while the comet is unreachable, so the caller's
/// backoff decides when to try again.
public final class GRPCCometClient: CometRPC {
    /// goim's Job allows 16 MiB messages (its comet only accepts 4 MiB: bug 35).
    public static let maxMessageBytes = 16 << 20

    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let stub: Goim_Comet_Comet.Client<HTTP2ClientTransport.Posix>
    private let options: CallOptions

    /// - Parameter secret: the deployment's internal secret (`[rpcAuth] secret`), sent with every call.
    public init(
        address: String, timeout: Duration, secret: String = "",
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        guard let hostPort = HostPort(address, defaultHost: "127.0.0.1") else {
            throw JobError.badCometAddress(address)
        }
        let target: any ResolvableTarget =
            switch IPAddressLiteral(hostPort.host) {
            case .v4: .ipv4(address: hostPort.host, port: hostPort.port)
            case .v6: .ipv6(address: hostPort.host, port: hostPort.port)
            case nil: .dns(host: hostPort.host, port: hostPort.port)
            }
        let transport = try HTTP2ClientTransport.Posix(
            target: target,
            transportSecurity: .plaintext,
            config: .defaults { config in
                // goim's Job: 16 MiB windows, reconnect backoff capped at 3 s, keepalive every 10 s.
                config.http2.targetWindowSize = Self.maxMessageBytes
                config.backoff = .init(initial: .milliseconds(100), max: .seconds(3), multiplier: 1.6, jitter: 0.2)
                config.connection.keepalive = .init(time: .seconds(10), timeout: .seconds(3), allowWithoutCalls: true)
            },
            eventLoopGroup: eventLoopGroup
        )
        client = GRPCClient(transport: transport, interceptors: [SharedSecretClientInterceptor(secret: secret)])
        stub = Goim_Comet_Comet.Client(wrapping: client)
        var options = CallOptions.defaults
        options.timeout = timeout
        options.waitForReady = false
        options.maxRequestMessageBytes = Self.maxMessageBytes
        options.maxResponseMessageBytes = Self.maxMessageBytes
        self.options = options
    }

    public func pushMsg(_ request: Goim_Comet_PushMsgReq) async throws {
        _ = try await stub.pushMsg(request, options: options)
    }

    public func broadcast(_ request: Goim_Comet_BroadcastReq) async throws {
        _ = try await stub.broadcast(request, options: options)
    }

    public func broadcastRoom(_ request: Goim_Comet_BroadcastRoomReq) async throws {
        _ = try await stub.broadcastRoom(request, options: options)
    }

    public func pushUsers(_ request: Swiftgoim_Comet_UserPushReq) async throws {
        _ = try await Swiftgoim_Comet_Users.Client(wrapping: client).push(request, options: options)
    }

    public func rooms() async throws -> Set<String> {
        let reply = try await stub.rooms(Goim_Comet_RoomsReq(), options: options)
        return Set(reply.rooms.compactMap { $0.value ? $0.key : nil })
    }

    public func run() async {
        try? await client.runConnections()
    }

    public func shutdown() {
        client.beginGracefulShutdown()
    }

    /// The default connector: a gRPC client per comet, calls bounded by `timeout`, each sending `secret`.
    public static func connector(timeout: Duration, secret: String = "") -> CometConnector {
        { instance in try GRPCCometClient(address: instance.rpcAddress, timeout: timeout, secret: secret) }
    }
}

/// Whether a failed comet call is worth repeating. Transport failures, deadlines and overload are
/// (the comet may be restarting); a comet that answered with an error refused this request and
/// would refuse it again (goim's comets answer UNKNOWN "rpc ... arg error").
enum CallFailure {
    case transient
    case permanent

    init(_ error: any Error) {
        guard let error = error as? RPCError else {
            // RuntimeError (client stopping, transport closed) and anything else: try again; the
            // retry loop stops by itself once the comet leaves the registry.
            self = .transient
            return
        }
        switch error.code {
        case .unavailable, .deadlineExceeded, .resourceExhausted, .aborted, .cancelled:
            self = .transient
        default:
            self = .permanent
        }
    }
}
