import CNats
import Synchronization

/// A pull subscription bound to a durable JetStream consumer.
public final class PullConsumer: Sendable {
    public let jetStream: JetStream
    /// The durable consumer's name.
    public let name: String
    /// The libnats subscription; nil once closed. Fetches hold the lock while they wait, so
    /// concurrent fetches on one PullConsumer take turns and close() waits for a running fetch
    /// (both only ever block pool threads).
    private let subscription: Mutex<CPointer?>

    init(jetStream: JetStream, subscription: OpaquePointer, name: String) {
        self.jetStream = jetStream
        self.name = name
        self.subscription = Mutex(CPointer(raw: subscription))
    }

    deinit {
        // Destroy, never Unsubscribe: Unsubscribe would delete the durable consumer.
        subscription.withLock { subscription in
            if let subscription { natsSubscription_Destroy(subscription.raw) }
        }
    }

    /// Up to `max` messages, waiting at most `timeout` for the first (an empty array when none
    /// came, not an error). Each must be acked (or nak'ed/termed) before the consumer's ack wait,
    /// or the server delivers it again. A cancelled task still waits for a running fetch to end.
    public func fetch(max: Int, timeout: Duration) async throws -> [JetStreamMessage] {
        let operation = "fetch from consumer \(name)"
        return try await jetStream.connection.blocking(operation) { _ in
            try self.subscription.withLock { subscription -> [JetStreamMessage] in
                guard let subscription else {
                    throw NATSError(code: .invalidSubscription, message: "the consumer was closed", operation: operation)
                }
                var list = natsMsgList()
                var code = jsErrCode(0)
                let status = natsSubscription_Fetch(&list, subscription.raw, Int32(clamping: max), timeout.milliseconds, &code)
                defer { natsMsgList_Destroy(&list) }  // destroys the messages too
                if status == NATS_TIMEOUT { return [] }
                try check(status, operation, jetStreamCode: code)
                return try (0..<Int(list.Count)).compactMap { index in
                    try list.Msgs[index].map { try JetStreamMessage(copying: $0, jetStream: self.jetStream) }
                }
            }
        }
    }

    /// Flushes pending nak/term/in-progress signals, then destroys the subscription. The durable
    /// consumer stays on the server with its unacked messages, for the next `pullConsumer` call.
    public func close() async {
        _ = try? await jetStream.connection.blocking("close consumer \(name)", cancellable: false) { connection in
            _ = natsConnection_FlushTimeout(connection, 2000)  // best effort: the connection may be down
            self.subscription.withLock { subscription in
                if let current = subscription { natsSubscription_Destroy(current.raw) }
                subscription = nil
            }
        }
    }
}

/// A message fetched from a durable consumer, copied out of libnats. Acknowledging it only needs
/// the connection (acks are messages to its reply subject), so it stays usable after `close()`.
public struct JetStreamMessage: Sendable {
    public let subject: String
    public let payload: [UInt8]
    public let headers: [String: [String]]
    /// 1 on first delivery, 2 on the first redelivery, ...
    public let deliveryCount: UInt64
    public let streamSequence: UInt64
    /// When the stream stored it (Unix nanoseconds).
    public let timestamp: Int64
    let replySubject: String
    let jetStream: JetStream

    init(copying msg: OpaquePointer, jetStream: JetStream) throws {
        let message = NATSMessage(copying: msg)
        var metadata: UnsafeMutablePointer<jsMsgMetaData>?
        try check(natsMsg_GetMetaData(&metadata, msg), "read metadata of a message on \(message.subject)")
        defer { jsMsgMetaData_Destroy(metadata) }
        self.subject = message.subject
        self.payload = message.payload
        self.headers = message.headers
        self.deliveryCount = metadata?.pointee.NumDelivered ?? 0
        self.streamSequence = metadata?.pointee.Sequence.Stream ?? 0
        self.timestamp = metadata?.pointee.Timestamp ?? 0
        self.replySubject = message.reply ?? ""
        self.jetStream = jetStream
    }

    /// Acknowledges and waits for the server to confirm it (AckSync), so a returned ack is never
    /// redelivered.
    public func ack() async throws {
        _ = try await jetStream.connection.request(
            replySubject, payload: Array("+ACK".utf8), timeout: jetStream.requestTimeout,
            operation: "ack of \(subject) #\(streamSequence)")
    }

    /// Asks for redelivery, at once or after `delay`. Like `inProgress` and `term` it is sent
    /// without waiting for the server (PullConsumer.close() flushes it).
    public func nak(delay: Duration? = nil) async throws {
        let body = delay.map { "-NAK {\"delay\":\($0.nanoseconds)}" } ?? "-NAK"
        try signal(body, "nak")
    }

    /// Restarts the ack-wait timer: still working on it.
    public func inProgress() async throws {
        try signal("+WPI", "in-progress")
    }

    /// Never deliver this message again.
    public func term() async throws {
        try signal("+TERM", "term")
    }

    private func signal(_ body: String, _ what: String) throws {
        do {
            try jetStream.connection.publishNow(replySubject, reply: nil, payload: Array(body.utf8), headers: [:])
        } catch let error as NATSError {
            throw NATSError(
                code: error.code, message: error.message, operation: "\(what) of \(subject) #\(streamSequence)")
        }
    }
}
