import NIOCore

/// One argument of a command. Every form is sent as a RESP bulk string with an explicit length,
/// so `.bytes` may hold any bytes (NUL, 0xFF, ...).
public enum RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case bytes(ByteBuffer)
    case integer(Int64)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
}

/// A command: its name (one word, e.g. "HSET"; subcommands like "GET" of CONFIG go in `arguments`) and arguments.
public struct RedisCommand: Sendable, Hashable {
    public var name: String
    public var arguments: [RedisArgument]

    public init(_ name: String, _ arguments: [RedisArgument]) {
        self.name = name
        self.arguments = arguments
    }

    /// `RedisCommand("CONFIG", "GET", "maxmemory")`: the first part is the name.
    public init(_ parts: String...) {
        precondition(!parts.isEmpty, "a RedisCommand needs a name")
        self.name = parts[0]
        self.arguments = parts.dropFirst().map(RedisArgument.string)
    }
}
