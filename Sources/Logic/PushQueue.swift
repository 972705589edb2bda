import GoIMConfig
import GoIMRPC
import Logging
import NATS
import ServiceLifecycle
import ServiceRuntime
import Synchronization

/// Where Logic hands pushes to Job: goim's `PushMsg`, one message per comet for key/mid pushes.
public protocol PushQueue: Sendable {
    /// Publishes `message` on the subject of its type and returns once the queue acknowledged it. A second publish
    /// with the same `id` within the stream's duplicate window is acknowledged and not stored again.
    func publish(_ message: Goim_Logic_PushMsg, id: String) async throws
    /// Publishes an upstream client message (goim's `Receive`) for the application. Not persisted.
    func publishUpstream(_ request: Goim_Logic_ReceiveReq) async throws
    /// Round-trips to the queue (health check).
    func ping() async throws
}

/// `PushQueue` on NATS JetStream: one stream (`nats.stream`, subjects `<nats.subject>.>`, file storage) that
/// is created or updated when the connection comes up, so a Job restart loses nothing. Pushes go to
/// `<nats.subject>.push|room|broadcast` as protobuf `goim.logic.PushMsg`; a publish returns after the
/// stream's ack.
///
/// As a `Service` it connects in `run()` (`NATSClient`: retrying every second while NATS is unreachable, so
/// Logic can start before NATS), and drains the connection on graceful shutdown. Until connected every publish
/// fails with `LogicError.queueUnavailable`.
public final class JetStreamPushQueue: PushQueue, Service {
    public let configuration: NATSSection
    public let clientName: String
    let logger: Logger
    private let nats: NATSClient
    /// Set once the stream is ready on the connection.
    private let jetStream = Mutex<JetStream?>(nil)
    /// When a publish that found no stream last made sure the stream exists: at most one such check a second, as
    /// every push during a clustered stream's leader election finds no responders (hundreds of create calls to the
    /// meta leader otherwise).
    private let lastStreamCheck = Mutex<ContinuousClock.Instant?>(nil)

    public init(configuration: NATSSection, clientName: String = "goim-logic", logger: Logger) {
        self.configuration = configuration
        self.clientName = clientName
        self.logger = logger
        var nats = NATSConfiguration(configuration, clientName: clientName)
        // A JetStream publish holds one of these threads until the stream's ack: they bound how many
        // pushes wait for their ack at once.
        nats.blockingThreads = Self.publishConcurrency
        self.nats = NATSClient(configuration: nats, logger: logger)
    }

    /// The stream Logic publishes into.
    public var streamConfiguration: StreamConfiguration { StreamConfiguration(configuration) }

    /// Pushes waiting for their JetStream ack at once (per Logic process).
    static let publishConcurrency = 32

    public var isConnected: Bool {
        jetStream.withLock { $0 != nil } && (nats.current?.isConnected ?? false)
    }

    /// Runs the NATS connection (connected with retries) and sets the stream up once it is there.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.nats.run() }
            await cancelWhenGracefulShutdown { await self.setUpStream() }
        }
        jetStream.withLock { $0 = nil }
    }

    /// Creates or updates the stream, retrying every second until it works or shutdown begins.
    private func setUpStream() async {
        guard let connection = try? await nats.connection() else { return }
        var attempt = 0
        while !Task.isCancelled {
            do {
                let stream = try connection.jetStream(requestTimeout: .seconds(5))
                try await stream.createOrUpdateStream(streamConfiguration)
                jetStream.withLock { $0 = stream }
                logger.info(
                    "JetStream stream ready",
                    metadata: ["goim.nats.stream": "\(configuration.stream)", "goim.nats.subjects": "\(configuration.subject).>"])
                return
            } catch {
                attempt += 1
                if attempt == 1 || attempt % 30 == 0 {
                    logger.warning("cannot set up the JetStream stream; retrying every second", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    private func current() throws -> (NATSConnection, JetStream) {
        guard let connection = nats.current, let jetStream = jetStream.withLock({ $0 }) else {
            throw LogicError.queueUnavailable(
                "not connected to NATS at \(configuration.urls.joined(separator: ",")) (or its stream \(configuration.stream) is not ready)")
        }
        return (connection, jetStream)
    }

    public func subject(for type: Goim_Logic_PushMsg.TypeEnum) -> String {
        switch type {
        case .push: configuration.subject(for: "push")
        case .room: configuration.subject(for: "room")
        case .broadcast: configuration.subject(for: "broadcast")
        case .UNRECOGNIZED(let value): configuration.subject(for: "type\(value)")
        }
    }

    /// Publishes and returns once the stream stored it, within `nats.publishTimeout`. A push is never reported
    /// stored unless JetStream acknowledged it; anything else throws `queueUnavailable` (the HTTP caller gets -500
    /// and retries with its Idempotency-Key).
    ///
    /// Not connected when the push arrives: it fails at once (NATS is away; the caller should not wait). Failures
    /// while it is on its way are retried with the same message id, so that the stream stores it once: the
    /// connection lost (libnats reconnects to another server of `nats.urls`; the publish waits for that), no
    /// answer (each attempt waits a quarter of `publishTimeout`, so a publish lost with a dying stream leader is
    /// sent again to the new one) and no responders (a clustered stream electing its leader has none for a few
    /// seconds; a single server that lost its store has no stream: it is created again, once per push).
    public func publish(_ message: Goim_Logic_PushMsg, id: String) async throws {
        let (connection, jetStream) = try current()
        guard connection.isConnected else {
            throw LogicError.queueUnavailable("NATS connection lost (reconnecting to \(configuration.urls.joined(separator: ",")))")
        }
        let payload: [UInt8]
        do {
            payload = try message.serializedBytes()
        } catch {
            throw LogicError.queueUnavailable("cannot encode PushMsg: \(error)")
        }
        let subject = subject(for: message.type)
        let deadline = ContinuousClock.now + configuration.publishTimeout
        let attemptTimeout = max(configuration.publishTimeout / 4, .milliseconds(100))
        var recreated = false
        var attempts = 0
        while true {
            attempts += 1
            do {
                _ = try await jetStream.publish(
                    subject, payload: payload, messageID: id, timeout: min(attemptTimeout, deadline - .now))
                if attempts > 1 {
                    logger.debug("push stored after a retry", metadata: ["goim.attempts": "\(attempts)"])
                }
                return
            } catch let error as NATSError where error.isTransient {
                if ContinuousClock.now >= deadline || Task.isCancelled {
                    throw LogicError.queueUnavailable("\(error) (\(attempts) attempts in \(configuration.publishTimeout))")
                }
                if error.code == .noResponders && !recreated && connection.isConnected && claimStreamCheck() {
                    // No stream listens: a single server that lost its store (create it again), or a clustered one
                    // electing its leader (the create finds it exists: harmless, and the next attempts wait).
                    recreated = true
                    logger.warning(
                        "no JetStream stream answered a publish; making sure the stream exists",
                        metadata: ["goim.nats.stream": "\(configuration.stream)"])
                    try? await jetStream.createOrUpdateStream(streamConfiguration, timeout: max(.milliseconds(1), deadline - .now))
                    continue
                }
                // Wait for the reconnection (or the election) a little, within the deadline.
                try? await Task.sleep(for: .milliseconds(error.code == .connectionDisconnected || !connection.isConnected ? 50 : 100))
                while !connection.isConnected && ContinuousClock.now < deadline && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                }
            } catch {
                throw LogicError.queueUnavailable("\(error)")
            }
        }
    }

    /// True for the first caller in a second: it checks (creates) the stream; the others only retry.
    private func claimStreamCheck() -> Bool {
        lastStreamCheck.withLock { last in
            let now = ContinuousClock.now
            if let last, now - last < .seconds(1) { return false }
            last = now
            return true
        }
    }

    public func publishUpstream(_ request: Goim_Logic_ReceiveReq) async throws {
        let (connection, _) = try current()
        let payload: [UInt8]
        do {
            payload = try request.serializedBytes()
        } catch {
            throw LogicError.queueUnavailable("cannot encode ReceiveReq: \(error)")
        }
        do {
            try await connection.publish(
                configuration.receiveSubject, payload: payload,
                headers: ["Goim-Mid": String(request.mid), "Goim-Operation": String(request.proto.op)])
        } catch {
            throw LogicError.queueUnavailable("\(error)")
        }
    }

    public func ping() async throws {
        let (connection, _) = try current()
        do {
            try await connection.flush(timeout: .seconds(1))
        } catch {
            throw LogicError.queueUnavailable("\(error)")
        }
    }
}
