import NIOCore

/// Typed wrappers for the commands goim uses. Each throws `RedisError.server` on an error reply and
/// `RedisError.protocolError` on a reply of an unexpected shape.
extension RedisClient {
    /// PING; returns "PONG".
    public func ping() async throws -> String {
        try await call("PING", []) { $0.string }
    }

    /// GET; nil when the key does not exist.
    public func get(_ key: String) async throws -> ByteBuffer? {
        try await call("GET", [.string(key)], Self.optionalBytes)
    }

    /// SET, with EX when `expireSeconds` is given.
    public func set(_ key: String, _ value: RedisArgument, expireSeconds: Int? = nil) async throws {
        var arguments: [RedisArgument] = [.string(key), value]
        if let expireSeconds { arguments += ["EX", .integer(Int64(expireSeconds))] }
        _ = try await send(RedisCommand("SET", arguments))
    }

    /// MGET; one entry per key, nil for a missing key.
    public func mget(_ keys: [String]) async throws -> [ByteBuffer?] {
        try await call("MGET", keys.map(RedisArgument.string)) { $0.array?.map(\.bytes) }
    }

    /// HSET of one field; returns true when the field is new.
    @discardableResult
    public func hset(_ key: String, _ field: String, _ value: RedisArgument) async throws -> Bool {
        try await call("HSET", [.string(key), .string(field), value]) { $0.int.map { $0 > 0 } }
    }

    /// HGET; nil when the key or the field does not exist.
    public func hget(_ key: String, _ field: String) async throws -> ByteBuffer? {
        try await call("HGET", [.string(key), .string(field)], Self.optionalBytes)
    }

    /// HGETALL as a dictionary of field to value (empty when the key does not exist).
    public func hgetall(_ key: String) async throws -> [String: ByteBuffer] {
        try await call("HGETALL", [.string(key)]) { reply -> [String: ByteBuffer]? in
            guard let items = reply.array, items.count % 2 == 0 else { return nil }
            var fields: [String: ByteBuffer] = [:]
            fields.reserveCapacity(items.count / 2)
            for index in stride(from: 0, to: items.count, by: 2) {
                guard let field = items[index].string, let value = items[index + 1].bytes else { return nil }
                fields[field] = value
            }
            return fields
        }
    }

    /// HDEL; returns how many fields were removed.
    @discardableResult
    public func hdel(_ key: String, _ fields: [String]) async throws -> Int64 {
        try await call("HDEL", [.string(key)] + fields.map(RedisArgument.string)) { $0.int }
    }

    @discardableResult
    public func hdel(_ key: String, _ fields: String...) async throws -> Int64 {
        try await hdel(key, fields)
    }

    /// DEL; returns how many keys were removed.
    @discardableResult
    public func del(_ keys: [String]) async throws -> Int64 {
        try await call("DEL", keys.map(RedisArgument.string)) { $0.int }
    }

    @discardableResult
    public func del(_ keys: String...) async throws -> Int64 {
        try await del(keys)
    }

    /// EXPIRE; returns false when the key does not exist.
    @discardableResult
    public func expire(_ key: String, seconds: Int) async throws -> Bool {
        try await call("EXPIRE", [.string(key), .integer(Int64(seconds))]) { $0.int.map { $0 == 1 } }
    }

    /// TTL in seconds; -1 when the key has no expiry, -2 when it does not exist.
    public func ttl(_ key: String) async throws -> Int64 {
        try await call("TTL", [.string(key)]) { $0.int }
    }

    /// Sends a command and converts its reply; `extract` returns nil for a reply of the wrong shape.
    private func call<T>(
        _ name: String, _ arguments: [RedisArgument], _ extract: (RESPValue) -> T?
    ) async throws -> T {
        let reply = try await send(RedisCommand(name, arguments))
        guard let value = extract(reply) else {
            throw RedisError.protocolError("unexpected reply to \(name): \(reply)")
        }
        return value
    }

    /// A bulk string, or nil for a null reply (`.some(nil)`); nil (wrong shape) for anything else.
    private static func optionalBytes(_ reply: RESPValue) -> ByteBuffer?? {
        reply.isNull ? .some(nil) : reply.bytes.map { .some($0) }
    }
}
