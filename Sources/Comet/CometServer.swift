import GoIMConfig
import GoIMRPC
import Logging
import LogicClient
import NIOCore
import NIOPosix
import NIOSSL
import Primitives
import Redis
import RPCAuth
import Registry
import ServiceLifecycle
import ServiceRuntime
import Telemetry

/// A whole comet, as the services an executable runs in one `ServiceGroup`: client listeners (TCP, WebSocket,
/// WebSocket over TLS), connections, buckets and rooms, the `goim.comet.Comet` gRPC service, the Logic client,
/// online reporting and registration in the cluster registry.
///
/// `services` lists them in start order; graceful shutdown runs it backwards: stop accepting, deregister, stop the
/// gRPC server (in-flight pushes finish), close every client (each disconnected at Logic, a bounded number at a
/// time), stop online reporting, close Logic's client and Redis, shut the event loops down. One
/// `MultiThreadedEventLoopGroup` (config `eventLoopThreads`, 0 = one per core) serves every transport and gRPC.
public final class CometServer: Sendable {
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
    /// This comet's metrics, served on the monitor port (`[monitor] addr`).
    public let telemetry: Telemetry
    /// The monitor port's server; nil when `monitor.addr` is off.
    public let monitor: MonitorServer?
    /// In start order; a `ServiceGroup` shuts them down in reverse.
    public let services: [any Service]
    let comet: Comet
    private let listeners: ListenersService
    private let rpc: GRPCServerService

    /// Builds everything; nothing listens or connects before the services run.
    /// - Parameters:
    ///   - logic: the Logic to call; nil = the gRPC client to `rpcClient.addrs`.
    public init(
        configuration: CometConfiguration, logger: Logger, logic: (any LogicAPI)? = nil, options: Options = Options()
    ) async throws {
        self.configuration = configuration
        if configuration.rpcAuth.allowUnauthenticated, !IPAddressLiteral.isLoopback(configuration.rpcServer.addr.host) {
            logger.warning(
                "the gRPC port accepts calls without the internal secret (rpcAuth.allowUnauthenticated = true)",
                metadata: ["goim.address": "\(configuration.rpcServer.addr)"])
        }
        let threads = configuration.eventLoopThreads > 0 ? configuration.eventLoopThreads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let telemetry = Telemetry()
        self.telemetry = telemetry
        var services: [any Service] = []
        do {
            let resolvedLogic: any LogicAPI
            var grpcLogic: GRPCLogicClient?
            if let logic {
                resolvedLogic = MeasuredLogic(logic, telemetry: telemetry)
            } else {
                let client = try GRPCLogicClient(
                    addresses: configuration.rpcClient.addrs, timeout: configuration.rpcClient.timeout,
                    batchSize: configuration.rpcClient.batchSize, secret: configuration.rpcAuth.secret,
                    eventLoopGroup: group, logger: logger)
                resolvedLogic = MeasuredLogic(client, telemetry: telemetry)
                grpcLogic = client
            }
            let comet = try Comet(
                configuration: configuration, group: group, logic: resolvedLogic, logger: logger,
                sweepInterval: options.sweepInterval, disconnectConcurrency: options.disconnectConcurrency)
            let tls: NIOSSLContext? =
                configuration.websocket.tlsOpen
                ? try TLS.makeContext(
                    certificateFiles: configuration.websocket.certFile, keyFiles: configuration.websocket.privateFile)
                : nil
            self.comet = comet
            CometMetrics.register(telemetry, comet: comet)
            let limits = configuration.limits
            logger.info(
                "connection limits",
                metadata: [
                    "goim.maxConnections": "\(comet.admission.cap)",
                    "goim.descriptorLimit": "\(ConnectionAdmission.descriptorLimit())",
                    "goim.reservedDescriptors": "\(limits.maxConnections > 0 ? "n/a" : "\(limits.reservedDescriptors)")",
                    "goim.maxConnectionsPerIP": "\(limits.maxConnectionsPerIP)",
                    "goim.connectRatePerIP": "\(limits.connectRatePerIP)",
                ])
            let rpcSection = configuration.rpcServer
            var rpcOptions = GRPCServerService.Options()
            rpcOptions.maxReceiveMessageSize = rpcSection.maxReceiveMessageSize
            rpcOptions.acceptedCompression = .all
            rpcOptions.maxIdleTime = rpcSection.idleTimeout
            rpcOptions.keepalive = (rpcSection.keepAliveInterval, rpcSection.keepAliveTimeout)
            rpcOptions.interceptors = [
                SharedSecretServerInterceptor(
                    policy: SharedSecretPolicy(
                        secret: configuration.rpcAuth.secret,
                        allowUnauthenticated: configuration.rpcAuth.allowUnauthenticated),
                    logger: logger)
            ]
            rpc = GRPCServerService(
                name: "goim.comet.Comet", address: rpcSection.addr, services: [CometRPCService(comet: comet), UsersRPCService(comet: comet)],
                options: rpcOptions, eventLoopGroup: group, logger: logger)
            listeners = ListenersService(comet: comet, tls: tls)

            services.append(
                EventLoopGroupShutdown(group) { [listeners] in
                    comet.whitelist.close()
                    listeners.addresses.fail(CometError.notRunning)
                })
            var redis: RedisClient?
            if options.registration {
                let client = RedisClient(
                    configuration: RedisConfiguration(configuration.redis, poolSize: min(configuration.redis.active, 2)),
                    eventLoopGroup: group, logger: logger)
                services.append(client)
                redis = client
            }
            if let grpcLogic { services.append(grpcLogic) }
            let reporter = OnlineReporter(comet: comet, interval: configuration.onlineInterval)
            services.append(reporter)
            services.append(ConnectionsService(comet: comet))
            services.append(rpc)
            var probes = [
                HealthProbe("listeners") { [listeners] in listeners.addresses.isSettled && listeners.addresses.current != nil ? nil : "client listeners not bound" },
                HealthProbe("rpc") { [rpc] in rpc.boundPort == nil ? "gRPC port not bound" : nil },
                HealthProbe("logic") { reporter.status.current },
            ]
            if let redis {
                let registration = RegistrationService(
                    registry: CometRegistry(redis: redis, configuration: configuration.registry),
                    refresh: configuration.registry.refresh, logger: logger, recordLost: { comet.rewriteSessions() },
                    snapshot: Self.snapshot(comet: comet, configuration: configuration, listeners: listeners, rpc: rpc))
                probes.append(HealthProbe("registry") { registration.status.current })
                let (listeners, rpc) = (listeners, rpc)
                services.append(
                    AfterReady(service: registration) {
                        _ = try await listeners.addresses.value()
                        _ = try await rpc.listeningPort()
                    })
            }
            if let address = configuration.monitor.addr {
                let server = MonitorServer(
                    host: address.host, port: address.port, routes: MonitorRoutes(telemetry: telemetry, probes: probes), logger: logger)
                monitor = server
                // Before the listeners: it stops after them on shutdown and answers /ready (503) while clients close.
                services.append(server)
            } else {
                monitor = nil
            }
            services.append(listeners)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        self.services = services
    }

    /// The bound ports, once every listener and the gRPC server are up. Throws if the comet failed to start.
    public func addresses() async throws -> BoundAddresses {
        let bound = try await listeners.addresses.value()
        let ports = { (transport: String) in bound.filter { $0.transport == transport }.map(\.port) }
        return BoundAddresses(
            tcp: ports("tcp"), webSocket: ports("websocket"), webSocketTLS: ports("websocket+tls"),
            rpc: try await rpc.listeningPort())
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

    /// What the registry publishes about this comet, with fresh counts at each refresh.
    private static func snapshot(
        comet: Comet, configuration: CometConfiguration, listeners: ListenersService, rpc: GRPCServerService
    ) -> @Sendable () -> CometInstance {
        let env = configuration.env
        let rpcHost = advertisedHost(for: configuration.rpcServer.addr.host)
        let startedAt = CometInstance.now()
        return {
            // Registration starts once both are bound (`AfterReady`).
            let bound = listeners.addresses.current ?? []
            let ports = { (transport: String) in bound.filter { $0.transport == transport }.map(\.port) }
            let rpcPort = rpc.boundPort ?? configuration.rpcServer.addr.port
            return CometInstance(
                hostname: env.host, rpcAddress: "\(rpcHost):\(rpcPort)",
                addrs: env.addrs, tcpPorts: ports("tcp"), wsPorts: ports("websocket"),
                wssPorts: ports("websocket+tls"), region: env.region, zone: env.zone, weight: env.weight,
                offline: env.offline, connCount: comet.buckets.count, ipCount: comet.ips.distinctCount,
                delivered: comet.counters.deliveredSnapshot.load(ordering: .relaxed), startedAt: startedAt)
        }
    }

    /// The address others reach the gRPC service at: the bind host, or for a wildcard bind the first non-loopback
    /// IPv4 address of the machine (as goim registered), else 127.0.0.1.
    static func advertisedHost(for bindHost: String) -> String {
        guard IPAddressLiteral.isWildcard(bindHost) else { return IPAddressLiteral.hostForURL(bindHost) }
        let devices = (try? System.enumerateDevices()) ?? []
        for device in devices {
            if case .v4 = device.address, let ip = device.address?.ipAddress, !ip.hasPrefix("127.") {
                return ip
            }
        }
        return "127.0.0.1"
    }
}
