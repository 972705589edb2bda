import GoIMConfig
import History
import Hummingbird
import Logging
import NIOCore
import Primitives
import Redis
import RPCAuth
import Registry
import ServiceLifecycle
import ServiceRuntime
import Telemetry

/// A whole Logic process, as the services an executable runs in one `ServiceGroup`: the Redis client, the
/// NATS/JetStream queue, the online refresher, the gRPC server and the HTTP server. `services` lists them in start
/// order, so the group starts the clients first and, on graceful shutdown, stops the listeners first.
///
/// Several Logic processes may run against one Redis and one NATS: all state is in Redis (routing,
/// online counts, registry) and JetStream; each process recomputes the cluster view on its own.
public final class LogicServer: Sendable {
    public let configuration: LogicConfiguration
    public let redis: RedisClient
    public let queue: JetStreamPushQueue
    public let cluster: ClusterState
    public let core: LogicCore
    public let refresher: OnlineRefresher
    public let grpc: GRPCServerService
    public let http: Application<LogicHTTPResponder>
    /// This logic's metrics, served on its HTTP port (`GET /metrics`).
    public let telemetry: Telemetry
    let logger: Logger
    private let boundHTTPPort: OnceValue<Int>

    /// Builds everything; nothing connects or listens before `run()`. Throws `LogicStartError` when the
    /// JWT key file cannot be read.
    public init(configuration: LogicConfiguration, logger: Logger) async throws {
        if configuration.httpServer.pushToken.isEmpty, !IPAddressLiteral.isLoopback(configuration.httpServer.addr.host) {
            logger.warning(
                "the push API accepts pushes without a token from anyone who reaches it (allowUnauthenticatedPush = true)",
                metadata: ["goim.address": "\(configuration.httpServer.addr)"])
        }
        if configuration.rpcAuth.allowUnauthenticated, !IPAddressLiteral.isLoopback(configuration.rpcServer.addr.host) {
            logger.warning(
                "the gRPC port accepts calls without the internal secret (rpcAuth.allowUnauthenticated = true)",
                metadata: ["goim.address": "\(configuration.rpcServer.addr)"])
        }
        let redisSection = configuration.redis
        let redis = RedisClient(configuration: RedisConfiguration(redisSection), logger: logger)
        let queue = JetStreamPushQueue(
            configuration: configuration.nats, clientName: "goim-logic-\(configuration.env.host)", logger: logger)
        let cluster = ClusterState(node: configuration.node, backoff: configuration.backoff, regions: configuration.regions)
        let routing = RedisRoutingStore(redis: redis, expire: redisSection.expire)
        let online = RedisOnlineStore(redis: redis, expire: redisSection.expire)
        let authenticator = try await JWTAuthenticator.make(configuration.auth)
        let telemetry = Telemetry()
        self.telemetry = telemetry
        LogicMetrics.register(telemetry, redis: redis, cluster: cluster)
        let core = LogicCore(
            routing: routing, online: online, queue: MeasuredPushQueue(base: queue, telemetry: telemetry), authenticator: authenticator, cluster: cluster,
            sessionHeartbeat: configuration.sessionHeartbeat, logger: logger,
            maxPendingPublishes: configuration.nats.maxPendingPublishes, allowKeyTakeover: configuration.auth.allowKeyTakeover,
            usersKeepHistory: configuration.history.mids != nil)
        let port = OnceValue<Int>()
        self.boundHTTPPort = port
        self.configuration = configuration
        self.logger = logger
        self.redis = redis
        self.queue = queue
        self.cluster = cluster
        self.core = core
        refresher = OnlineRefresher(
            registry: CometRegistry(redis: redis, configuration: configuration.registry), store: online, routing: routing,
            cluster: cluster,
            refresh: configuration.online.refresh, staleAfter: configuration.online.staleAfter, logger: logger)
        // Accepts gzip and deflate requests (the default): goim's comet gzips RenewOnline.
        var rpcOptions = GRPCServerService.Options()
        rpcOptions.maxReceiveMessageSize = configuration.rpcServer.maxReceiveMessageSize
        rpcOptions.interceptors = [
            RPCMetricsInterceptor(telemetry: telemetry, prefix: "goim_logic"),
            SharedSecretServerInterceptor(
                policy: SharedSecretPolicy(
                    secret: configuration.rpcAuth.secret, allowUnauthenticated: configuration.rpcAuth.allowUnauthenticated),
                logger: logger)
        ]
        let history = LogicHistory(policy: configuration.history, store: HistoryStore(redis: redis))
        grpc = GRPCServerService(
            name: "goim.logic.Logic", address: configuration.rpcServer.addr,
            services: [
                LogicRPCService(core: core, logger: logger), LogicBatchRPCService(core: core, logger: logger),
                SessionRPCService(core: core, logger: logger), HistoryRPCService(history: history, logger: logger),
            ],
            options: rpcOptions, logger: logger)
        http = Application(
            responder: LogicHTTPResponder(
                core: core, maxBodySize: configuration.httpServer.maxBodySize, pushToken: configuration.httpServer.pushToken,
                corsOrigins: configuration.httpServer.corsOrigins,
                admission: HTTPAdmission(
                    limits: .init(
                        ratePerIP: configuration.httpServer.rateLimit, burstPerIP: configuration.httpServer.rateBurst,
                        maxConcurrentRequests: configuration.httpServer.maxConcurrentRequests)),
                history: history, telemetry: telemetry),
            server: .http1(configuration: .init(idleTimeout: TimeAmount(configuration.httpServer.idleTimeout))),
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.httpServer.addr.host, port: configuration.httpServer.addr.port)),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? 0
                port.publish(bound)
                logger.info("HTTP API listening", metadata: ["goim.port": "\(bound)"])
            },
            logger: logger)
    }

    /// In start order; a `ServiceGroup` shuts them down in reverse.
    public var services: [any Service] { [redis, queue, refresher, grpc, http] }

    /// The HTTP port once the listener is up (the configured one, or the one chosen for port 0).
    public func httpPort() async throws -> Int { try await boundHTTPPort.value() }

    /// The gRPC port once the listener is up.
    public func rpcPort() async throws -> Int { try await grpc.listeningPort() }
}
