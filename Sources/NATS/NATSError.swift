import CNats

/// The one error type of this module: what was being done, libnats' status and its text.
///
/// `description` reads like "publish to goim.push failed: NATS_NO_RESPONDERS: No responders
/// available for request", with the JetStream error code appended when the server sent one.
public struct NATSError: Error, CustomStringConvertible, Sendable {
    /// A libnats status (`natsStatus`), or one of the few conditions this module detects itself.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int
        public let name: String

        public static let generic = Code(NATS_ERR)
        public static let ioError = Code(NATS_IO_ERROR)
        public static let connectionClosed = Code(NATS_CONNECTION_CLOSED)
        public static let noServer = Code(NATS_NO_SERVER)
        public static let connectionDisconnected = Code(NATS_CONNECTION_DISCONNECTED)
        public static let authFailed = Code(NATS_CONNECTION_AUTH_FAILED)
        public static let notFound = Code(NATS_NOT_FOUND)
        public static let invalidArgument = Code(NATS_INVALID_ARG)
        public static let invalidSubscription = Code(NATS_INVALID_SUBSCRIPTION)
        public static let illegalState = Code(NATS_ILLEGAL_STATE)
        public static let slowConsumer = Code(NATS_SLOW_CONSUMER)
        public static let maxPayload = Code(NATS_MAX_PAYLOAD)
        public static let timeout = Code(NATS_TIMEOUT)
        public static let noResponders = Code(NATS_NO_RESPONDERS)

        public var description: String { name }

        init(_ status: natsStatus) {
            let raw = Int(status.rawValue)
            self.init(rawValue: raw, name: statusNames[raw] ?? "natsStatus(\(raw))")
        }

        public init(rawValue: Int, name: String) {
            self.rawValue = rawValue
            self.name = name
        }

        public static func == (lhs: Code, rhs: Code) -> Bool { lhs.rawValue == rhs.rawValue }
        public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }
    }

    public let code: Code
    /// libnats' text for the status, plus its more specific last-error text when it has one.
    public let message: String
    /// What was being done, e.g. "publish to goim.push".
    public let operation: String
    /// The JetStream API error code (e.g. 10059 "stream not found") when the server sent one.
    public let jetStreamCode: Int?

    public init(code: Code, message: String, operation: String, jetStreamCode: Int? = nil) {
        self.code = code
        self.message = message
        self.operation = operation
        self.jetStreamCode = jetStreamCode
    }

    public var description: String {
        var text = "\(operation) failed: \(code.name): \(message)"
        if let jetStreamCode { text += " (JetStream error \(jetStreamCode))" }
        return text
    }
}

extension NATSError {
    /// True for failures that say "not now" rather than "never": no answer in time, nobody answering (a clustered
    /// stream electing its leader has no subscriber for a few seconds), the connection lost while waiting (libnats
    /// reconnects to another server), JetStream temporarily unavailable (10008). The same call may work a moment
    /// later; for a publish, retry with the same message ID so that the stream stores it once.
    public var isTransient: Bool {
        code == .timeout || code == .noResponders || code == .connectionDisconnected || code == .ioError
            || jetStreamCode == Int(JSClusterNotAvailErr.rawValue)
    }

    /// Builds the error for a failed libnats call. Must run on the thread that made the call:
    /// `nats_GetLastError` is thread-local.
    init(_ status: natsStatus, _ operation: String, jetStreamCode: jsErrCode = jsErrCode(0)) {
        let statusText = String(cString: natsStatus_GetText(status))
        var lastStatus = NATS_OK
        var message = statusText
        if let last = nats_GetLastError(&lastStatus), lastStatus == status {
            let detail = String(cString: last)
            if !detail.isEmpty && detail != statusText { message += " / \(detail)" }
        }
        self.init(
            code: Code(status),
            message: message,
            operation: operation,
            jetStreamCode: jetStreamCode.rawValue == 0 ? nil : Int(jetStreamCode.rawValue))
    }

    /// The connection's (or consumer's) thread pool has been shut down by `close()`.
    static func closed(_ operation: String) -> NATSError {
        NATSError(code: .connectionClosed, message: "the connection was closed", operation: operation)
    }
}

/// Throws a `NATSError` unless `status` is `NATS_OK`.
@inline(__always)
func check(_ status: natsStatus, _ operation: @autoclosure () -> String, jetStreamCode: jsErrCode = jsErrCode(0)) throws {
    if status != NATS_OK { throw NATSError(status, operation(), jetStreamCode: jetStreamCode) }
}

// Names of natsStatus values, in declaration order (status.h of libnats 3.4).
private let statusNames: [Int: String] = Dictionary(uniqueKeysWithValues: [
    "NATS_OK", "NATS_ERR", "NATS_PROTOCOL_ERROR", "NATS_IO_ERROR", "NATS_LINE_TOO_LONG",
    "NATS_CONNECTION_CLOSED", "NATS_NO_SERVER", "NATS_STALE_CONNECTION", "NATS_SECURE_CONNECTION_WANTED",
    "NATS_SECURE_CONNECTION_REQUIRED", "NATS_CONNECTION_DISCONNECTED", "NATS_CONNECTION_AUTH_FAILED",
    "NATS_NOT_PERMITTED", "NATS_NOT_FOUND", "NATS_ADDRESS_MISSING", "NATS_INVALID_SUBJECT",
    "NATS_INVALID_ARG", "NATS_INVALID_SUBSCRIPTION", "NATS_INVALID_TIMEOUT", "NATS_ILLEGAL_STATE",
    "NATS_SLOW_CONSUMER", "NATS_MAX_PAYLOAD", "NATS_MAX_DELIVERED_MSGS", "NATS_INSUFFICIENT_BUFFER",
    "NATS_NO_MEMORY", "NATS_SYS_ERROR", "NATS_TIMEOUT", "NATS_FAILED_TO_INITIALIZE",
    "NATS_NOT_INITIALIZED", "NATS_SSL_ERROR", "NATS_NO_SERVER_SUPPORT", "NATS_NOT_YET_CONNECTED",
    "NATS_DRAINING", "NATS_INVALID_QUEUE_NAME", "NATS_NO_RESPONDERS", "NATS_MISMATCH",
    "NATS_MISSED_HEARTBEAT",
].enumerated().map { ($0.offset, $0.element) })
