import GoIMConfig
import History
import Logging
import NATS
import NIOCore
import NIOPosix
import Redis
import Registry
import ServiceLifecycle
import ServiceRuntime
import Telemetry

/// A whole job process, as the services an executable runs in one `ServiceGroup`: the Redis client (registry), the
/// NATS connection, the comet pool and the consumer. `services` lists them in start order, so graceful shutdown
/// stops the consumer first and its last acks still reach NATS.
public final class JobWorker: Sendable {
    public let configuration: JobConfiguration
    /// In start order; a `ServiceGroup` shuts them down in reverse.
    public let services: [any Service]
    public let statistics: JobStatistics
    public let pool: CometPool
    public let consumer: JobConsumer
    /// This job's metrics, served on the monitor port (`[monitor] addr`).
    public var telemetry: Telemetry { statistics.telemetry }
    /// The monitor port's server; nil when `monitor.addr` is off.
    public let monitor: MonitorServer?

    /// Builds everything; nothing connects before the services run (NATS may come up after the job).
    public init(
        configuration: JobConfiguration, logger: Logger, connector: CometConnector? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws {
        let redis = RedisClient(
            configuration: RedisConfiguration(configuration.redis), eventLoopGroup: eventLoopGroup, logger: logger)
        let registry = CometRegistry(redis: redis, configuration: configuration.registry)
        let statistics = JobStatistics()
        let health = CometHealth(
            skipAfter: configuration.comet.skipAfter, callTimeout: configuration.comet.timeout, statistics: statistics)
        let pool = CometPool(
            settings: CometPool.Settings(configuration), registry: registry, logger: logger,
            connector: connector
                ?? GRPCCometClient.connector(timeout: configuration.comet.timeout, secret: configuration.rpcAuth.secret),
            health: health)
        let nats = NATSClient(
            configuration: NATSConfiguration(configuration.nats, clientName: "goim-job-\(configuration.env.host)"), logger: logger)
        let consumer = JobConsumer(
            settings: JobConsumer.Settings(configuration), nats: nats, pool: pool, statistics: statistics,
            logger: logger, streamConfiguration: StreamConfiguration(configuration.nats),
            history: (configuration.history, HistoryStore(redis: redis)))
        JobMetrics.register(statistics.telemetry, statistics: statistics, consumer: consumer, pool: pool)
        var services: [any Service] = [redis, nats, pool, consumer]
        if let address = configuration.monitor.addr {
            let probes = [
                HealthProbe("nats") { nats.current?.isConnected == true ? nil : "not connected to NATS" },
                HealthProbe("consumer") { consumer.isConsuming ? nil : "not bound to the durable consumer yet" },
                HealthProbe.roundTrip("redis") { _ = try await redis.ping() },
            ]
            let server = MonitorServer(
                host: address.host, port: address.port, routes: MonitorRoutes(telemetry: statistics.telemetry, probes: probes),
                logger: logger)
            monitor = server
            services.append(server)
        } else {
            monitor = nil
        }
        self.configuration = configuration
        self.services = services
        self.statistics = statistics
        self.pool = pool
        self.consumer = consumer
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
        deliveryDeadline = configuration.comet.deliveryDeadline
    }
}
