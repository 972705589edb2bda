import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import Logging
import NIOCore
import NIOPosix
import Primitives
import ServiceLifecycle
import Synchronization

/// A gRPC server (HTTP/2 over NIO, plaintext) as a `Service`: serves until graceful shutdown, then lets calls in
/// flight finish. Comet (`goim.comet.Comet`) and logic (`goim.logic.Logic`) both run theirs through this type.
public final class GRPCServerService: Service {
    public struct Options: Sendable {
        /// Largest request message accepted.
        public var maxReceiveMessageSize: Int = 4 << 20
        /// Compression algorithms accepted for requests (none: compressed requests are refused).
        public var acceptedCompression: CompressionAlgorithmSet = [.gzip, .deflate]
        /// Connections without calls for this long are closed (nil: never).
        public var maxIdleTime: Duration?
        /// Server-initiated keepalive pings (nil: none).
        public var keepalive: (interval: Duration, timeout: Duration)?
        /// Run before every handler (the internal secret check).
        public var interceptors: [any ServerInterceptor] = []

        public init() {}
    }

    /// Released when `run()` ends: the transport's deinit completes a promise on the event loop group, which must
    /// still be running then (it is shut down after every other service).
    private let server: Mutex<GRPCServer<HTTP2ServerTransport.Posix>?>
    private let name: String
    private let address: HostPort
    private let logger: Logger
    private let port = OnceValue<Int>()

    /// - Parameters:
    ///   - name: what the log calls this server (its gRPC service name).
    ///   - address: where to listen; port 0 picks a free port (see `listeningPort()`).
    public init(
        name: String, address: HostPort, services: [any RegistrableRPCService], options: Options = Options(),
        eventLoopGroup: MultiThreadedEventLoopGroup = .singleton, logger: Logger
    ) {
        let config = HTTP2ServerTransport.Posix.Config.defaults { config in
            config.rpc.maxRequestPayloadSize = options.maxReceiveMessageSize
            config.compression.enabledAlgorithms = options.acceptedCompression
            // goim's gRPC clients ping every 10 s even without calls (goim bug 32): allow it rather than GOAWAY them.
            config.connection.keepalive.clientBehavior = .init(minPingIntervalWithoutCalls: .seconds(5), allowWithoutCalls: true)
            if let idle = options.maxIdleTime { config.connection.maxIdleTime = idle }
            if let keepalive = options.keepalive {
                config.connection.keepalive.time = keepalive.interval
                config.connection.keepalive.timeout = keepalive.timeout
            }
        }
        let socketAddress: GRPCNIOTransportCore.SocketAddress =
            IPAddressLiteral(address.host) == .v6
            ? .ipv6(host: address.host, port: address.port) : .ipv4(host: address.host, port: address.port)
        server = Mutex(GRPCServer(
            transport: .http2NIOPosix(
                address: socketAddress, transportSecurity: .plaintext, config: config, eventLoopGroup: eventLoopGroup),
            services: services, interceptors: options.interceptors))
        self.name = name
        self.address = address
        self.logger = logger
    }

    /// The bound port once listening (the configured one, or the one chosen for port 0). Throws if the server could
    /// not listen or stopped before it did.
    public func listeningPort() async throws -> Int {
        try await port.value()
    }

    /// The bound port if the server is listening already.
    public var boundPort: Int? { port.current }

    public func run() async throws {
        guard let server = self.server.withLock({ $0 }) else { throw ServiceRuntimeError.stopped(name) }
        defer { self.server.withLock { $0 = nil } }
        do {
            try await withGracefulShutdownHandler {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await server.serve() }
                    if let bound = try await server.listeningAddress, let number = bound.ipv4?.port ?? bound.ipv6?.port {
                        logger.info(
                            "gRPC service listening",
                            metadata: ["goim.grpc": "\(name)", "goim.address": "\(address.host):\(number)"])
                        port.publish(number)
                    }
                }
            } onGracefulShutdown: {
                server.beginGracefulShutdown()
            }
        } catch {
            port.fail(error)
            throw error
        }
        port.fail(ServiceRuntimeError.stopped(name))
    }
}

/// Errors of the shared service plumbing.
public enum ServiceRuntimeError: Error, CustomStringConvertible, Sendable {
    /// A server stopped before it was listening.
    case stopped(String)

    public var description: String {
        switch self {
        case .stopped(let name): "\(name) stopped before it was listening"
        }
    }
}
