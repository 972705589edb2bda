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
        do {
            _ = try await jetStream.publish(subject, payload: payload, messageID: id)
        } catch let error as NATSError where error.code == .noResponders {
            // The stream is gone (a NATS server that lost its store): set it up again and retry once.
            logger.warning("JetStream stream missing; creating it again", metadata: ["goim.nats.stream": "\(configuration.stream)"])
            do {
                try await jetStream.createOrUpdateStream(streamConfiguration)
                _ = try await jetStream.publish(subject, payload: payload, messageID: id)
            } catch {
                throw LogicError.queueUnavailable("\(error)")
            }
        } catch {
            throw LogicError.queueUnavailable("\(error)")
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
