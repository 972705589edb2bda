import GoIMConfig
import Logging
import NATS
import NIOCore
import NIOPosix
import Redis
import Registry
import ServiceLifecycle

/// A job process: the services to run in one `ServiceGroup`, in dependency order (Redis, NATS, the
/// comet pool, then the consumer, so graceful shutdown stops the consumer first and its last acks
/// still reach NATS).
public struct Job: Sendable {
    public let services: [any Service]
    public let statistics: JobStatistics
    public let pool: CometPool
    public let consumer: JobConsumer

    /// Connects to NATS (that must work at start) and builds the services. Nothing else happens
    /// until they run.
    public static func make(
        configuration: JobConfiguration, logger: Logger, connector: CometConnector? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Job {
        let redis = RedisClient(
            configuration: RedisConfiguration(configuration), eventLoopGroup: eventLoopGroup, logger: logger)
        let registry = CometRegistry(redis: redis, configuration: configuration.registry)
        let pool = CometPool(
            settings: CometPool.Settings(configuration), registry: registry, logger: logger,
            connector: connector ?? GRPCCometClient.connector(timeout: configuration.comet.timeout))

        let nats = try await NATSConnection.connect(NATSConfiguration(configuration), logger: logger)
        let jetStream = try nats.jetStream()
        let statistics = JobStatistics()
        let consumer = JobConsumer(
            settings: JobConsumer.Settings(configuration), jetStream: jetStream, pool: pool, statistics: statistics,
            logger: logger, streamConfiguration: StreamConfiguration(configuration.nats))
        return Job(services: [redis, nats, pool, consumer], statistics: statistics, pool: pool, consumer: consumer)
    }

    /// Runs until SIGTERM or SIGINT (when `handleSignals`), then shuts down gracefully.
    public func run(handleSignals: Bool = true, maximumShutdown: Duration = .seconds(60), logger: Logger) async throws {
        var configuration = ServiceGroupConfiguration(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger)
        configuration.maximumGracefulShutdownDuration = maximumShutdown
        try await ServiceGroup(configuration: configuration).run()
    }
}

extension RedisConfiguration {
    init(_ configuration: JobConfiguration) {
        let redis = configuration.redis
        self.init(
            host: redis.addr.host, port: redis.addr.port, password: redis.auth.isEmpty ? nil : redis.auth,
            database: redis.db, poolSize: redis.active, connectTimeout: redis.dialTimeout,
            commandTimeout: redis.readTimeout)
    }
}

extension NATSConfiguration {
    init(_ configuration: JobConfiguration) {
        let nats = configuration.nats
        self.init(
            urls: nats.urls, name: "goim-job-\(configuration.env.host)", connectTimeout: nats.connectTimeout,
            user: nats.user.isEmpty ? nil : nats.user, password: nats.password.isEmpty ? nil : nats.password,
            token: nats.token.isEmpty ? nil : nats.token)
    }
}

extension StreamConfiguration {
    /// The push stream as logic creates it: `<subject>.>` kept for `maxAge` / `maxBytes`.
    public init(_ nats: NATSSection) {
        self.init(
            name: nats.stream, subjects: [nats.subject + ".>"], storage: .file, maxAge: nats.maxAge,
            maxBytes: Int64(nats.maxBytes), replicas: nats.replicas)
    }
}

extension CometPool.Settings {
    public init(_ configuration: JobConfiguration) {
        self.init()
        concurrency = configuration.comet.routineSize
        // Comets rewrite their record every registry.refresh: read it twice as often (at most every
        // 2 s), and call a comet gone only once it has been missing for longer than that.
        refreshInterval = min(configuration.registry.refresh / 2, .seconds(2))
        grace = configuration.registry.refresh + refreshInterval
        roomTargets = RoomTargets(rawValue: configuration.room.targets) ?? .all
        roomsRefresh = configuration.room.roomsRefresh
    }
}

extension JobConsumer.Settings {
    public init(_ configuration: JobConfiguration) {
        self.init()
        stream = configuration.nats.stream
        durable = configuration.consumer.durable
        filterSubject = configuration.nats.subject + ".>"
        batch = configuration.consumer.batch
        maxInFlight = configuration.consumer.maxInFlight
        ackWait = configuration.consumer.ackWait
        fetchWait = configuration.consumer.fetchWait
        drainTimeout = configuration.consumer.drainTimeout
        roomBatch = configuration.room.batch
        roomQueueSize = configuration.room.queueSize
        roomIdle = configuration.room.idle
        backoff = configuration.comet.backoff
        maxBackoff = configuration.comet.maxBackoff
    }
}
