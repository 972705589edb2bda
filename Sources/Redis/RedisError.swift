import NIOCore
import NIOPosix

/// Every error the Redis module throws. The case is the code; `description` is the message for a person.
public enum RedisError: Error, CustomStringConvertible, Sendable {
    /// The TCP connect (or the AUTH/SELECT set-up after it) failed: server down, refused, timed out.
    case connectionFailed(host: String, port: Int, underlying: any Error)
    /// The server rejected the configured password (AUTH failed), so no connection could be made.
    case authenticationFailed(host: String, port: Int, message: String)
    /// No reply within `RedisConfiguration.commandTimeout`; the connection was closed (its replies are out of step).
    case timeout(command: String)
    /// Redis answered with an error reply (e.g. "WRONGTYPE ...", "NOAUTH ...").
    case server(message: String)
    /// The connection closed before the reply arrived (server gone, or an earlier command on it timed out).
    case connectionClosed
    /// The bytes from the server were not valid RESP, or a reply came that no command asked for.
    case protocolError(String)
    /// The client was shut down (its `run()` has ended).
    case shutdown

    public var description: String {
        switch self {
        case .connectionFailed(let host, let port, let underlying):
            return "cannot connect to Redis at \(host):\(port): \(Self.describe(underlying))"
        case .authenticationFailed(let host, let port, let message):
            return "Redis at \(host):\(port) rejected the password: \(message)"
        case .timeout(let command):
            return "Redis command \(command) got no reply in time"
        case .server(let message):
            return "Redis error: \(message)"
        case .connectionClosed:
            return "the connection to Redis closed before the reply arrived"
        case .protocolError(let message):
            return "Redis protocol error: \(message)"
        case .shutdown:
            return "the Redis client is shut down"
        }
    }

    /// NIO's connect errors list every attempt; the first attempt's error says what went wrong.
    private static func describe(_ error: any Error) -> String {
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return "\(first.error)"
        }
        if case ChannelError.connectTimeout(let amount) = error {
            return "connect timed out after \(amount.nanoseconds / 1_000_000) ms"
        }
        return "\(error)"
    }
}
