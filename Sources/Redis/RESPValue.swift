import NIOCore

/// A decoded Redis reply (RESP2).
public enum RESPValue: Sendable, Hashable {
    /// A status reply such as "OK" or "PONG".
    case simpleString(String)
    /// An error reply; `RedisClient.send` throws it as `RedisError.server`, `pipeline` returns it in place.
    case error(String)
    case integer(Int64)
    case bulkString(ByteBuffer)
    /// A nil bulk string or nil array (missing key, missing field).
    case null
    case array([RESPValue])

    /// Status and bulk strings as UTF-8 text.
    public var string: String? {
        switch self {
        case .simpleString(let string): return string
        case .bulkString(let buffer): return String(buffer: buffer)
        default: return nil
        }
    }

    /// Integers, and strings that hold a decimal integer (e.g. the value of GET after INCR).
    public var int: Int64? {
        switch self {
        case .integer(let value): return value
        case .simpleString, .bulkString: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    /// Bulk strings (and status strings) as bytes.
    public var bytes: ByteBuffer? {
        switch self {
        case .bulkString(let buffer): return buffer
        case .simpleString(let string): return ByteBuffer(string: string)
        default: return nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}
