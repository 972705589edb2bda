import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A pooled, pipelining Redis client.
///
/// Connections are made on first use and re-made after failures, so the client works whether or not `run()` is
/// running; `run()` ties it to a `ServiceGroup`: it waits for graceful shutdown (or cancellation), then closes
/// every connection, after which commands fail with `RedisError.shutdown`.
public final class RedisClient: Sendable, Service {
    public let configuration: RedisConfiguration
    private let pool: ConnectionPool
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
        self.pool = ConnectionPool(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
    }

    deinit {
        _ = pool.shutdown()
    }

    /// Runs until graceful shutdown or cancellation, then closes all connections. Call it once.
    public func run() async throws {
        let first = hasRun.withLock { hasRun in
            defer { hasRun = true }
            return !hasRun
        }
        precondition(first, "RedisClient.run() must be called only once")
        try? await gracefulShutdown()  // returns on graceful shutdown, throws on cancellation: both mean stop
        for closed in pool.shutdown() {
            try? await closed.get()
        }
    }

    /// Sends one command. An error reply from Redis throws `RedisError.server`.
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        let reply = try await pipeline([command])[0]
        if case .error(let message) = reply { throw RedisError.server(message: message) }
        return reply
    }

    /// Sends all `commands` in one write on one connection and returns their replies in order. An error reply
    /// to one command is returned in its place as `.error`; only transport failures throw.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        commandsSent.add(commands.count, ordering: .relaxed)
        do {
            let connection = try await pool.connection()
            return try await connection.send(commands)
        } catch {
            failures.add(1, ordering: .relaxed)
            throw error
        }
    }
}
