import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A pooled, pipelining Redis client, for a single Redis or (with `RedisConfiguration.clusterNodes`) a Redis Cluster.
/// In cluster mode commands are routed by slot, pipelines are split per node and put back in order, and multi-key
/// commands whose keys span slots (MGET, DEL, EXISTS, UNLINK, TOUCH) are split and merged; see `ClusterRouter`.
///
/// Connections are made on first use and re-made after failures, so the client works whether or not `run()` is
/// running; `run()` ties it to a `ServiceGroup`: it waits for graceful shutdown (or cancellation), then closes
/// every connection, after which commands fail with `RedisError.shutdown`.
public final class RedisClient: Sendable, Service {
    public let configuration: RedisConfiguration
    private enum Backend {
        case single(ConnectionPool)
        case cluster(ClusterRouter)
    }
    private let backend: Backend
    private let hasRun = Mutex(false)
    /// Commands sent and transport failures (a pipeline that threw counts once), for the services' metrics.
    public let commandsSent = Atomic<Int>(0)
    public let failures = Atomic<Int>(0)

    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        if configuration.isCluster {
            backend = .cluster(ClusterRouter(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger))
        } else {
            backend = .single(ConnectionPool(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger))
        }
    }

    deinit {
        _ = shutdownConnections()
    }

    /// Whether this client talks to a Redis Cluster (multi-key scripts must then keep their keys in one slot).
    public var isCluster: Bool { configuration.isCluster }

    private func shutdownConnections() -> [EventLoopFuture<Void>] {
        switch backend {
        case .single(let pool): return pool.shutdown()
        case .cluster(let router): return router.shutdown()
        }
    }

    /// Runs until graceful shutdown or cancellation, then closes all connections. Call it once.
    public func run() async throws {
        let first = hasRun.withLock { hasRun in
            defer { hasRun = true }
            return !hasRun
        }
        precondition(first, "RedisClient.run() must be called only once")
        await withTaskGroup(of: Void.self) { group in
            if case .cluster(let router) = backend {
                let interval = configuration.clusterRefreshInterval
                group.addTask { await router.refreshPeriodically(every: interval) }
            }
            try? await gracefulShutdown()  // returns on graceful shutdown, throws on cancellation: both mean stop
            group.cancelAll()
        }
        for closed in shutdownConnections() {
            try? await closed.get()
        }
    }

    /// Sends one command. An error reply from Redis throws `RedisError.server`.
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        let reply = try await pipeline([command])[0]
        if case .error(let message) = reply { throw RedisError.server(message: message) }
        return reply
    }

    /// Sends all `commands` in one write on one connection (in cluster mode: one write per node) and returns their
    /// replies in order. An error reply to one command is returned in its place as `.error`; only transport failures
    /// throw.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        commandsSent.add(commands.count, ordering: .relaxed)
        do {
            switch backend {
            case .single(let pool):
                return try await pool.connection().send(commands)
            case .cluster(let router):
                return try await router.pipeline(commands)
            }
        } catch {
            failures.add(1, ordering: .relaxed)
            throw error
        }
    }
}
