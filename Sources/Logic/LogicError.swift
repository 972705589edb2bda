/// Every error the Logic module reports to a caller. The case is the code; `message` is what a person reads.
/// HTTP maps it onto goim's envelope (`-400` / `-500`), gRPC onto `RPCError`.
public enum LogicError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A query parameter is missing, malformed or out of range; `parameter` names it.
    case badParameter(parameter: String, reason: String)
    /// The request body is larger than `httpServer.maxBodySize`.
    case bodyTooLarge(limit: Int)
    /// The request body could not be read.
    case bodyUnreadable(String)
    /// `/goim/push/*` without the configured bearer token.
    case unauthorized(String)
    /// The auth body of `Connect` is not acceptable (bad JSON, bad or expired JWT, ...).
    case authenticationFailed(String)
    /// goim mode: the client chose a key that is connected for another member (goim kicked that connection).
    case keyConflict(key: String, mid: Int64)
    /// Redis could not be reached or answered with an error.
    case redisUnavailable(String)
    /// NATS could not be reached, or JetStream did not acknowledge.
    case queueUnavailable(String)
    /// Some push groups were acknowledged and others failed: `failed` names the comets whose group failed.
    case partialPush(failed: [String], reason: String)
    /// `limit` publishes already wait for their JetStream ack (NATS slow or away): refused at once, not queued.
    case queueOverloaded(limit: Int)

    public var message: String {
        switch self {
        case .badParameter(let parameter, let reason): "\(parameter): \(reason)"
        case .bodyTooLarge(let limit): "body: the message is larger than the limit of \(limit) bytes (httpServer.maxBodySize)"
        case .bodyUnreadable(let reason): "body: \(reason)"
        case .unauthorized(let reason): reason
        case .authenticationFailed(let reason): "authentication failed: \(reason)"
        case .keyConflict(let key, let mid):
            "authentication failed: key \"\(key)\" is connected for another member than \(mid); choose another key or let the server pick one"
        case .redisUnavailable(let reason): "redis unavailable: \(reason)"
        case .queueUnavailable(let reason): "nats unavailable: \(reason)"
        case .partialPush(let failed, let reason):
            "nats unavailable: push to \(failed.count) comet(s) failed (\(failed.joined(separator: ", "))): \(reason)"
        case .queueOverloaded(let limit):
            "nats overloaded: \(limit) pushes already wait for their JetStream ack (nats.maxPendingPublishes); retry later"
        }
    }

    public var description: String { message }

    /// goim's envelope code: -400 request error, -500 server error (plus -401 for the optional push token).
    public var code: Int {
        switch self {
        case .badParameter, .bodyTooLarge, .bodyUnreadable, .authenticationFailed, .keyConflict: -400
        case .unauthorized: -401
        case .redisUnavailable, .queueUnavailable, .partialPush, .queueOverloaded: -500
        }
    }

    /// Wraps a Redis-layer error (anything thrown by the Redis client) as `.redisUnavailable`.
    static func redis(_ error: any Error) -> LogicError {
        if let error = error as? LogicError { return error }
        return .redisUnavailable("\(error)")
    }

    static func queue(_ error: any Error) -> LogicError {
        if let error = error as? LogicError { return error }
        return .queueUnavailable("\(error)")
    }
}
