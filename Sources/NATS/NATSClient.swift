import Logging
import Primitives
import ServiceLifecycle

/// A NATS connection as a `Service`: `run()` connects, retrying every `retryInterval` while no server answers (so a
/// process may start before NATS), then keeps the connection until graceful shutdown and drains it. Whoever needs
/// the connection awaits `connection()`.
public final class NATSClient: Service, Sendable {
    public let configuration: NATSConfiguration
    private let logger: Logger
    private let retryInterval: Duration
    private let connected = OnceValue<NATSConnection>()

    public init(configuration: NATSConfiguration, logger: Logger, retryInterval: Duration = .seconds(1)) {
        self.configuration = configuration
        self.logger = logger
        self.retryInterval = retryInterval
    }

    /// The connection once it is up; throws if the client stopped before it connected (or on cancellation).
    public func connection() async throws -> NATSConnection {
        try await connected.value()
    }

    /// The connection if it is up already.
    public var current: NATSConnection? { connected.current }

    public func run() async throws {
        let connection = await cancelWhenGracefulShutdown { await self.connectWithRetry() }
        guard let connection else {
            connected.fail(NATSError(code: .connectionClosed, message: "stopped before connecting", operation: "connect"))
            return
        }
        connected.publish(connection)
        try await connection.run()
    }

    private func connectWithRetry() async -> NATSConnection? {
        var attempt = 0
        while !Task.isCancelled {
            do {
                let connection = try await NATSConnection.connect(configuration, logger: logger)
                logger.info("NATS connected", metadata: ["goim.nats.urls": "\(configuration.urls.joined(separator: ","))"])
                return connection
            } catch {
                attempt += 1
                if attempt == 1 || attempt.isMultiple(of: 30) {
                    logger.warning(
                        "cannot reach NATS; retrying",
                        metadata: [
                            "goim.nats.urls": "\(configuration.urls.joined(separator: ","))", "error": "\(error)",
                            "goim.retry": "\(retryInterval)",
                        ])
                }
                try? await Task.sleep(for: retryInterval)
            }
        }
        return nil
    }
}
