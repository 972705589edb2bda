import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMRPC
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Redis
import Registry
import ServiceLifecycle

/// A whole comet: client listeners (TCP, WebSocket, WebSocket over TLS), connections, buckets and rooms, the
/// `goim.comet.Comet` gRPC service, the Logic client, online reporting and registration in the cluster registry.
///
/// Run it in a `ServiceGroup`. On graceful shutdown it stops in this order: stop accepting, deregister, stop the
/// gRPC server (in-flight pushes finish), close every client (each disconnected at Logic, a bounded number at a
/// time), stop online reporting, close Logic's client and Redis. One `MultiThreadedEventLoopGroup` (config
/// `eventLoopThreads`, 0 = one per core) serves every transport and gRPC; it is shut down when `run()` returns.
public final class CometService: Service {
    public struct Options: Sendable {
        /// How often each event loop sweeps its connections for handshake and heartbeat deadlines. A deadline is
        /// enforced within one interval of passing.
        public var sweepInterval: Duration = .seconds(1)
        /// Register in the cluster registry (Redis). Off: no Redis connection is made.
        public var registration: Bool = true
        /// Logic `Disconnect` calls in flight at once (matters at shutdown, when every client closes).
        public var disconnectConcurrency: Int = 128

        public init() {}
    }

    public let configuration: CometConfiguration
    let comet: Comet
    private let logger: Logger
    private let options: Options
    private let group: MultiThreadedEventLoopGroup
    private let grpcLogic: GRPCLogicClient?
    private let redis: RedisClient?
    private let tls: NIOSSLContext?
    private let board = Board<BoundAddresses>()

    /// - Parameters:
    ///   - logic: the Logic to call; nil = the gRPC client to `rpcClient.addrs`.
    public init(
        configuration: CometConfiguration, logger: Logger, logic: (any LogicAPI)? = nil, options: Options = Options()
    ) throws {
        self.configuration = configuration
        self.logger = logger
        self.options = options
        let threads = configuration.eventLoopThreads > 0 ? configuration.eventLoopThreads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        self.group = group
        do {
            let resolvedLogic: any LogicAPI
            if let logic {
                resolvedLogic = logic
                grpcLogic = nil
            } else {
                let client = try GRPCLogicClient(
                    addresses: configuration.rpcClient.addrs, timeout: configuration.rpcClient.timeout,
                    batchSize: configuration.rpcClient.batchSize, eventLoopGroup: group, logger: logger)
                resolvedLogic = client
                grpcLogic = client
            }
            comet = try Comet(
                configuration: configuration, group: group, logic: resolvedLogic, logger: logger,
                sweepInterval: options.sweepInterval, disconnectConcurrency: options.disconnectConcurrency)
            if configuration.websocket.tlsOpen {
                tls = try TLS.makeContext(
                    certificateFiles: configuration.websocket.certFile, keyFiles: configuration.websocket.privateFile)
            } else {
                tls = nil
            }
            if options.registration {
                let r = configuration.redis
                redis = RedisClient(
                    configuration: RedisConfiguration(
                        host: r.addr.host, port: r.addr.port, password: r.auth.isEmpty ? nil : r.auth, database: r.db,
                        poolSize: min(r.active, 2), connectTimeout: r.dialTimeout, commandTimeout: r.readTimeout),
                    eventLoopGroup: group, logger: logger)
            } else {
                redis = nil
            }
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// The bound ports, once every listener (and the gRPC server) is up. Throws if the comet failed to start.
    public func addresses() async throws -> BoundAddresses {
        try await board.value()
    }

    /// A snapshot of the counters.
    public func statistics() async -> CometStatistics {
        await comet.statistics()
    }

    /// Writes `proto` to every member of room `id`, as the `BroadcastRoom` RPC does, and returns once the event loops
    /// have written it. For a comet embedded in another process (and the micro-benchmarks in Benchmarks/).
    public func broadcastRoom(_ id: String, proto: Goim_Protocol_Proto) async {
        await comet.broadcastRoom(id, push: Push(proto: proto))
    }

    public func run() async throws {
        defer { comet.whitelist.close() }
        do {
            try await runServices()
        } catch {
            board.publish(.failure(error))
            try? await group.shutdownGracefully()
            throw error
        }
        board.publish(.failure(CometError.notRunning))
        try await group.shutdownGracefully()
    }

    private func runServices() async throws {
        let listeners = try await Listeners.bind(comet: comet, tls: tls)
        let ports = { (transport: String) in listeners.filter { $0.transport == transport }.map(\.port) }
        let (tcpPorts, wsPorts, wssPorts) = (ports("tcp"), ports("websocket"), ports("websocket+tls"))
        let board = self.board

        let rpc = configuration.rpcServer
        let serverConfig = HTTP2ServerTransport.Posix.Config.defaults { config in
            config.rpc.maxRequestPayloadSize = rpc.maxReceiveMessageSize
            config.compression.enabledAlgorithms = .all
            config.connection.maxIdleTime = rpc.idleTimeout
            config.connection.keepalive = .init(
                time: rpc.keepAliveInterval, timeout: rpc.keepAliveTimeout,
                // goim's clients ping every 10 s even without calls (goim bug 32): allow it.
                clientBehavior: .init(minPingIntervalWithoutCalls: .seconds(5), allowWithoutCalls: true))
        }
        let address: GRPCNIOTransportCore.SocketAddress =
            rpc.addr.host.contains(":")
            ? .ipv6(host: rpc.addr.host, port: rpc.addr.port) : .ipv4(host: rpc.addr.host, port: rpc.addr.port)
        let server = GRPCServer(
            transport: .http2NIOPosix(address: address, transportSecurity: .plaintext, config: serverConfig, eventLoopGroup: group),
            services: [CometRPCService(comet: comet)])
        let logger = self.logger
        let grpcService = GRPCServerService(server: server) { port in
            logger.info("gRPC service goim.comet.Comet listening", metadata: ["goim.address": "\(rpc.addr.host):\(port)"])
            board.publish(.success(BoundAddresses(tcp: tcpPorts, webSocket: wsPorts, webSocketTLS: wssPorts, rpc: port)))
        }

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let redis { services.append(.init(service: redis)) }
        if let grpcLogic { services.append(.init(service: grpcLogic)) }
        services.append(.init(service: OnlineReporter(comet: comet, interval: configuration.onlineInterval)))
        services.append(.init(service: ConnectionsService(comet: comet)))
        services.append(.init(service: grpcService))
        if let redis {
            let registration = RegistrationService(
                registry: CometRegistry(redis: redis, configuration: configuration.registry),
                refresh: configuration.registry.refresh, logger: logger, snapshot: makeSnapshot())
            services.append(.init(service: AfterReady(ready: { _ = try await board.value() }, service: registration)))
        }
        services.append(.init(service: ListenersService(listeners: listeners, logger: logger)))

        let serviceGroup = ServiceGroup(configuration: .init(services: services, logger: logger))
        try await withGracefulShutdownHandler {
            try await serviceGroup.run()
        } onGracefulShutdown: {
            Task { await serviceGroup.triggerGracefulShutdown() }
        }
    }

    /// What the registry publishes about this comet, with fresh counts at each refresh.
    private func makeSnapshot() -> @Sendable () -> CometInstance {
        let comet = self.comet
        let board = self.board
        let configuration = self.configuration
        let env = configuration.env
        let rpcHost = Self.advertisedHost(for: configuration.rpcServer.addr.host)
        let startedAt = CometInstance.now()
        return {
            let addresses = board.current
            return CometInstance(
                hostname: env.host, rpcAddress: "\(rpcHost):\(addresses?.rpc ?? configuration.rpcServer.addr.port)",
                addrs: env.addrs, tcpPorts: addresses?.tcp ?? [], wsPorts: addresses?.webSocket ?? [],
                wssPorts: addresses?.webSocketTLS ?? [], region: env.region, zone: env.zone, weight: env.weight,
                offline: env.offline, connCount: comet.buckets.count, ipCount: comet.ips.distinctCount,
                startedAt: startedAt)
        }
    }

    /// The address others reach the gRPC service at: the bind host, or for a wildcard bind the first non-loopback
    /// IPv4 address of the machine (as goim registered), else 127.0.0.1.
    static func advertisedHost(for bindHost: String) -> String {
        guard bindHost == "0.0.0.0" || bindHost == "::" || bindHost.isEmpty else {
            return bindHost.contains(":") ? "[\(bindHost)]" : bindHost
        }
        let devices = (try? System.enumerateDevices()) ?? []
        for device in devices {
            if case .v4 = device.address, let ip = device.address?.ipAddress, !ip.hasPrefix("127.") {
                return ip
            }
        }
        return "127.0.0.1"
    }
}
