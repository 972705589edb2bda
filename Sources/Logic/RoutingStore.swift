import Foundation
import GoIMProtocol
import NIOCore
import Redis

/// Where sessions live: which comet (server) holds a connection key, and which keys a member (mid) has.
/// goim's names and types: `mid_<mid>` hash key → server, `key_<key>` string → server, both with a TTL. swift-goim
/// adds `srv_<server>`, a set of `<mid>:<key>` per comet with the same TTL, so that a dead comet's sessions can be
/// removed at once (`purgeSessions`) instead of lingering until they expire.
public protocol RoutingStore: Sendable {
    /// Stores a new session (Connect).
    func addMapping(mid: Int64, key: String, server: String) async throws
    /// Refreshes a session's expiry and re-creates it if it expired (Heartbeat). Returns whether
    /// `key_<key>` still existed.
    @discardableResult
    func refreshMapping(mid: Int64, key: String, server: String) async throws -> Bool
    /// Removes a session (Disconnect), but only the parts that still point at `server` (goim bug 1).
    /// Returns whether `key_<key>` was removed.
    @discardableResult
    func deleteMapping(mid: Int64, key: String, server: String) async throws -> Bool
    /// The server of each key, in order; nil for an unknown key. One round trip.
    func servers(forKeys keys: [String]) async throws -> [String?]
    /// Every session of the given members, in member order. One round trip.
    func sessions(forMids mids: [Int64]) async throws -> [Session]
    /// Round-trips to the store (health check).
    func ping() async throws
    /// `addMapping` for many sessions at once (a batched Connect).
    func addMappings(_ sessions: [Session]) async throws
    /// `deleteMapping` for many sessions at once (a batched Disconnect); one result per session, in order.
    func deleteMappings(_ sessions: [Session]) async throws -> [Bool]
    /// For each session: whether its key is live (`key_<key>` exists) but not one of its member's keys (`mid_<mid>`
    /// has no such field; for mid 0 a live key always counts as someone else's). One round trip.
    func keysHeldByOthers(_ sessions: [Session]) async throws -> [Bool]
    /// Removes every session a comet holds (it died), `batch` at a time, while `stillGone` says it has not come back.
    /// Returns how many were removed.
    func purgeSessions(server: String, batch: Int, stillGone: @Sendable () async throws -> Bool) async throws -> Int
}

extension RoutingStore {
    public func addMappings(_ sessions: [Session]) async throws {
        for session in sessions { try await addMapping(mid: session.mid, key: session.key, server: session.server) }
    }

    public func deleteMappings(_ sessions: [Session]) async throws -> [Bool] {
        var removed: [Bool] = []
        for session in sessions {
            removed.append(try await deleteMapping(mid: session.mid, key: session.key, server: session.server))
        }
        return removed
    }
}

/// One connection's routing: member, connection key and the comet holding it.
public struct Session: Sendable, Hashable {
    public var mid: Int64
    public var key: String
    public var server: String

    public init(mid: Int64, key: String, server: String) {
        self.mid = mid
        self.key = key
        self.server = server
    }
}

/// `RoutingStore` over Redis, with goim's key names. Every operation is one round trip (a pipeline or one
/// Lua script); every failure is thrown as `LogicError.redisUnavailable`.
public struct RedisRoutingStore: RoutingStore {
    public let redis: RedisClient
    /// TTL of `mid_*` and `key_*` in whole seconds (goim's `redis.expire`).
    public let expireSeconds: Int64

    public init(redis: RedisClient, expire: Duration) {
        self.redis = redis
        self.expireSeconds = max(1, expire.components.seconds)
    }

    static func midKey(_ mid: Int64) -> String { "mid_\(mid)" }
    static func keyKey(_ key: String) -> String { "key_\(key)" }
    static func serverKey(_ server: String) -> String { "srv_\(server)" }
    /// A session in `srv_<server>`: the mid first (an integer, so the first `:` ends it), then the key.
    static func member(mid: Int64, key: String) -> String { "\(mid):\(key)" }

    public func addMapping(mid: Int64, key: String, server: String) async throws {
        try await addMappings([Session(mid: mid, key: key, server: server)])
    }

    /// One pipeline for every session: HSET + EXPIRE of `mid_<mid>` (members only), SET EX of `key_<key>`, and SADD
    /// to `srv_<server>` (EXPIRE once per server).
    public func addMappings(_ sessions: [Session]) async throws {
        guard !sessions.isEmpty else { return }
        var commands: [RedisCommand] = []
        commands.reserveCapacity(sessions.count * 4 + 1)
        var servers: Set<String> = []
        for session in sessions {
            if session.mid > 0 {
                let midKey = RedisArgument.string(Self.midKey(session.mid))
                commands.append(RedisCommand("HSET", [midKey, .string(session.key), .string(session.server)]))
                commands.append(RedisCommand("EXPIRE", [midKey, .integer(expireSeconds)]))
            }
            commands.append(
                RedisCommand("SET", [.string(Self.keyKey(session.key)), .string(session.server), "EX", .integer(expireSeconds)]))
            commands.append(
                RedisCommand("SADD", [.string(Self.serverKey(session.server)), .string(Self.member(mid: session.mid, key: session.key))]))
            servers.insert(session.server)
        }
        for server in servers {
            commands.append(RedisCommand("EXPIRE", [.string(Self.serverKey(server)), .integer(expireSeconds)]))
        }
        try check(try await run(commands))
    }

    /// KEYS[1] = key_<key>, KEYS[2] = srv_<server>, KEYS[3] = mid_<mid> (only when mid > 0);
    /// ARGV = server, key, ttl, `<mid>:<key>`.
    static let refreshScript = """
        local existed = redis.call('EXPIRE', KEYS[1], ARGV[3])
        if existed == 0 then
          redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
        end
        redis.call('SADD', KEYS[2], ARGV[4])
        redis.call('EXPIRE', KEYS[2], ARGV[3])
        if #KEYS > 2 then
          if existed == 0 or redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then
            redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
          end
          redis.call('EXPIRE', KEYS[3], ARGV[3])
        end
        return existed
        """

    /// Deletes `key_<key>` and the `mid_<mid>` field only while they still name the calling server, so an
    /// old connection's Disconnect cannot remove a newer session's routing (goim bug 1).
    /// Same KEYS and ARGV as `refreshScript` (ARGV[3] unused).
    static let deleteScript = """
        local removed = 0
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          removed = redis.call('DEL', KEYS[1])
        end
        redis.call('SREM', KEYS[2], ARGV[4])
        if #KEYS > 2 and redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
          redis.call('HDEL', KEYS[3], ARGV[2])
        end
        return removed
        """

    @discardableResult
    public func refreshMapping(mid: Int64, key: String, server: String) async throws -> Bool {
        if redis.isCluster { return try await refreshMappingPerKey(Session(mid: mid, key: key, server: server)) }
        let reply = try await run([Self.scriptCommand(Self.refreshScript, Session(mid: mid, key: key, server: server), ttl: expireSeconds)])[0]
        if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
        return reply.int == 1
    }

    @discardableResult
    public func deleteMapping(mid: Int64, key: String, server: String) async throws -> Bool {
        try await deleteMappings([Session(mid: mid, key: key, server: server)])[0]
    }

    /// One pipeline of the delete script, one script call per session.
    public func deleteMappings(_ sessions: [Session]) async throws -> [Bool] {
        guard !sessions.isEmpty else { return [] }
        if redis.isCluster { return try await deleteMappingsPerKey(sessions) }
        let commands = sessions.map { Self.scriptCommand(Self.deleteScript, $0, ttl: 0) }
        let replies = try await run(commands)
        try check(replies)
        return replies.map { $0.int == 1 }
    }

    /// One pipeline: EXISTS `key_<key>`, then HEXISTS `mid_<mid>` `<key>` for members.
    public func keysHeldByOthers(_ sessions: [Session]) async throws -> [Bool] {
        guard !sessions.isEmpty else { return [] }
        var commands: [RedisCommand] = []
        commands.reserveCapacity(sessions.count * 2)
        for session in sessions {
            commands.append(RedisCommand("EXISTS", [.string(Self.keyKey(session.key))]))
            if session.mid > 0 {
                commands.append(RedisCommand("HEXISTS", [.string(Self.midKey(session.mid)), .string(session.key)]))
            }
        }
        let replies = try await run(commands)
        try check(replies)
        var position = 0
        return sessions.map { session in
            let live = replies[position].int == 1
            position += 1
            guard session.mid > 0 else { return live }
            let own = replies[position].int == 1
            position += 1
            return live && !own
        }
    }

    /// EVAL of the refresh or delete script for one session.
    private static func scriptCommand(_ script: String, _ session: Session, ttl: Int64) -> RedisCommand {
        var keys: [RedisArgument] = [.string(keyKey(session.key)), .string(serverKey(session.server))]
        if session.mid > 0 { keys.append(.string(midKey(session.mid))) }
        let arguments: [RedisArgument] = [
            .string(session.server), .string(session.key), .integer(ttl), .string(member(mid: session.mid, key: session.key)),
        ]
        return RedisCommand("EVAL", [.string(script), .integer(Int64(keys.count))] + keys + arguments)
    }

    /// SPOP takes each batch out of `srv_<server>` atomically, so logics purging the same comet at once split the work
    /// instead of repeating it; each session is then deleted with the delete script (only what still names `server`).
    public func purgeSessions(server: String, batch: Int, stillGone: @Sendable () async throws -> Bool) async throws -> Int {
        var purged = 0
        while try await stillGone() {
            let reply = try await run([RedisCommand("SPOP", [.string(Self.serverKey(server)), .integer(Int64(batch))])])[0]
            if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
            let members = reply.array?.compactMap(\.string) ?? []
            guard !members.isEmpty else { break }
            let sessions = members.compactMap { member -> Session? in
                guard let colon = member.firstIndex(of: ":"), let mid = Int64(member[..<colon]) else { return nil }
                return Session(mid: mid, key: String(member[member.index(after: colon)...]), server: server)
            }
            purged += try await deleteMappings(sessions).count
        }
        return purged
    }

    public func servers(forKeys keys: [String]) async throws -> [String?] {
        guard !keys.isEmpty else { return [] }
        let reply = try await run([RedisCommand("MGET", keys.map { .string(Self.keyKey($0)) })])[0]
        if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
        guard let values = reply.array, values.count == keys.count else {
            throw LogicError.redisUnavailable("unexpected reply to MGET: \(reply)")
        }
        return values.map { $0.string.flatMap { $0.isEmpty ? nil : $0 } }
    }

    public func sessions(forMids mids: [Int64]) async throws -> [Session] {
        guard !mids.isEmpty else { return [] }
        let replies = try await run(mids.map { RedisCommand("HGETALL", [.string(Self.midKey($0))]) })
        var sessions: [Session] = []
        for (mid, reply) in zip(mids, replies) {
            if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
            guard let items = reply.array, items.count % 2 == 0 else {
                throw LogicError.redisUnavailable("unexpected reply to HGETALL: \(reply)")
            }
            var found: [Session] = []
            for index in stride(from: 0, to: items.count, by: 2) {
                guard let key = items[index].string, let server = items[index + 1].string,
                    !key.isEmpty, !server.isEmpty
                else { continue }
                found.append(Session(mid: mid, key: key, server: server))
            }
            sessions += found.sorted { $0.key < $1.key }
        }
        return sessions
    }

    // MARK: Redis Cluster
    //
    // `key_<key>`, `mid_<mid>` and `srv_<server>` keep goim's names, so they hash to different slots and one script
    // cannot touch them all. In cluster mode each script above is split into one per key, sent in one pipeline (the
    // client sends each to its node). Each part is a compare-and-set on its own key, so every key alone goes through
    // the same states as with the whole script; only the atomicity across keys is lost. See docs/redis-cluster.md
    // for the window this opens and why it is safe.

    /// KEYS[1] = key_<key>; ARGV = server, ttl. The key part of `refreshScript`.
    static let keyRefreshScript = """
        local existed = redis.call('EXPIRE', KEYS[1], ARGV[2])
        if existed == 0 then
          redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
        end
        return existed
        """

    /// KEYS[1] = mid_<mid>; ARGV = key, server, ttl, force. The mid part of `refreshScript`: the field is written when
    /// missing, or always with force = 1 (the key had expired, so the session was re-created).
    static let midRefreshScript = """
        if ARGV[4] == '1' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
          redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        end
        redis.call('EXPIRE', KEYS[1], ARGV[3])
        return 0
        """

    /// KEYS[1] = key_<key>; ARGV = server. The key part of `deleteScript`.
    static let keyDeleteScript = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('DEL', KEYS[1])
        end
        return 0
        """

    /// KEYS[1] = mid_<mid>; ARGV = key, server. The mid part of `deleteScript`.
    static let midDeleteScript = """
        if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
          redis.call('HDEL', KEYS[1], ARGV[1])
        end
        return 0
        """

    private func midRefresh(_ session: Session, force: Bool) -> RedisCommand {
        RedisCommand("EVAL", [
            .string(Self.midRefreshScript), 1, .string(Self.midKey(session.mid)), .string(session.key),
            .string(session.server), .integer(expireSeconds), force ? "1" : "0",
        ])
    }

    /// `refreshScript` split per key: one pipeline, plus a second round trip only when `key_<key>` had expired
    /// (then the mid field is rewritten as the whole script would have).
    private func refreshMappingPerKey(_ session: Session) async throws -> Bool {
        let serverKey = RedisArgument.string(Self.serverKey(session.server))
        var commands = [
            RedisCommand("EVAL", [
                .string(Self.keyRefreshScript), 1, .string(Self.keyKey(session.key)), .string(session.server),
                .integer(expireSeconds),
            ]),
            RedisCommand("SADD", [serverKey, .string(Self.member(mid: session.mid, key: session.key))]),
            RedisCommand("EXPIRE", [serverKey, .integer(expireSeconds)]),
        ]
        if session.mid > 0 { commands.append(midRefresh(session, force: false)) }
        let replies = try await run(commands)
        try check(replies)
        let existed = replies[0].int == 1
        if !existed && session.mid > 0 { try check(try await run([midRefresh(session, force: true)])) }
        return existed
    }

    /// `deleteScript` split per key, every session in one pipeline.
    private func deleteMappingsPerKey(_ sessions: [Session]) async throws -> [Bool] {
        var commands: [RedisCommand] = []
        var keyPositions: [Int] = []
        for session in sessions {
            keyPositions.append(commands.count)
            commands.append(RedisCommand("EVAL", [
                .string(Self.keyDeleteScript), 1, .string(Self.keyKey(session.key)), .string(session.server),
            ]))
            commands.append(RedisCommand("SREM", [
                .string(Self.serverKey(session.server)), .string(Self.member(mid: session.mid, key: session.key)),
            ]))
            if session.mid > 0 {
                commands.append(RedisCommand("EVAL", [
                    .string(Self.midDeleteScript), 1, .string(Self.midKey(session.mid)), .string(session.key),
                    .string(session.server),
                ]))
            }
        }
        let replies = try await run(commands)
        try check(replies)
        return keyPositions.map { replies[$0].int == 1 }
    }

    public func ping() async throws {
        let reply = try await run([RedisCommand("PING")])[0]
        if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
    }

    private func run(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        do {
            return try await redis.pipeline(commands)
        } catch {
            throw LogicError.redis(error)
        }
    }

    private func check(_ replies: [RESPValue]) throws {
        for reply in replies {
            if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
        }
    }
}

/// One comet's room counts as stored in `ol_<server>` (goim's `model.Online`).
public struct ServerOnline: Sendable, Equatable {
    public var server: String
    public var roomCount: [String: Int32]
    /// Unix seconds of the newest shard.
    public var updated: Int64

    public init(server: String, roomCount: [String: Int32], updated: Int64) {
        self.server = server
        self.roomCount = roomCount
        self.updated = updated
    }
}

/// Per-comet room counts: `ol_<server>`, a hash of 64 shards (CityHash32(room) mod 64) each holding goim's
/// JSON `{"server","room_count","updated"}`.
public protocol OnlineStore: Sendable {
    /// Replaces the comet's counts (all shards at once, goim bug 25) and re-applies the TTL.
    func storeOnline(_ online: ServerOnline) async throws
    /// The counts of each server (nil when it has no valid shard). One round trip.
    func loadOnline(servers: [String]) async throws -> [ServerOnline?]
    func deleteOnline(servers: [String]) async throws
}

public struct RedisOnlineStore: OnlineStore {
    public static let shards: UInt32 = 64
    public let redis: RedisClient
    public let expireSeconds: Int64

    public init(redis: RedisClient, expire: Duration) {
        self.redis = redis
        self.expireSeconds = max(1, expire.components.seconds)
    }

    static func onlineKey(_ server: String) -> String { "ol_\(server)" }

    /// The shard JSON exactly as goim writes it: keys in struct order, room map keys sorted.
    static func shardJSON(server: String, roomCount: [String: Int32], updated: Int64) -> String {
        GoJSON.object([
            ("server", .string(server)),
            ("room_count", .map(roomCount.mapValues { .integer($0) })),
            ("updated", .integer(updated)),
        ]).encoded()
    }

    public func storeOnline(_ online: ServerOnline) async throws {
        let key = Self.onlineKey(online.server)
        var shards: [UInt32: [String: Int32]] = [:]
        for (room, count) in online.roomCount {
            shards[room.cityHash32 % Self.shards, default: [:]][room] = count
        }
        var fields: [RedisArgument] = [.string(key)]
        for (shard, rooms) in shards.sorted(by: { $0.key < $1.key }) {
            fields.append(.string(String(shard)))
            fields.append(.string(Self.shardJSON(server: online.server, roomCount: rooms, updated: online.updated)))
        }
        var commands = [RedisCommand("MULTI"), RedisCommand("DEL", [.string(key)])]
        if fields.count > 1 {
            commands.append(RedisCommand("HSET", fields))
            commands.append(RedisCommand("EXPIRE", [.string(key), .integer(expireSeconds)]))
        }
        commands.append(RedisCommand("EXEC"))
        let replies: [RESPValue]
        do {
            replies = try await redis.pipeline(commands)
        } catch {
            throw LogicError.redis(error)
        }
        for reply in replies {
            if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
        }
        guard case .array = replies.last else { throw LogicError.redisUnavailable("MULTI/EXEC was aborted") }
    }

    public func loadOnline(servers: [String]) async throws -> [ServerOnline?] {
        guard !servers.isEmpty else { return [] }
        let replies: [RESPValue]
        do {
            replies = try await redis.pipeline(servers.map { RedisCommand("HGETALL", [.string(Self.onlineKey($0))]) })
        } catch {
            throw LogicError.redis(error)
        }
        let decoder = JSONDecoder()
        return try zip(servers, replies).map { server, reply -> ServerOnline? in
            if case .error(let message) = reply { throw LogicError.redisUnavailable(message) }
            guard let items = reply.array, !items.isEmpty else { return nil }
            var merged = ServerOnline(server: server, roomCount: [:], updated: 0)
            var valid = false
            for index in stride(from: 1, to: items.count, by: 2) {
                guard let bytes = items[index].bytes,
                    let shard = try? decoder.decode(ShardJSON.self, from: Data(bytes.readableBytesView))
                else { continue }  // invalid shards are skipped, as goim does
                valid = true
                merged.roomCount.merge(shard.roomCount ?? [:]) { _, new in new }
                merged.updated = max(merged.updated, shard.updated ?? 0)
            }
            return valid ? merged : nil
        }
    }

    public func deleteOnline(servers: [String]) async throws {
        guard !servers.isEmpty else { return }
        do {
            _ = try await redis.send(RedisCommand("DEL", servers.map { .string(Self.onlineKey($0)) }))
        } catch {
            throw LogicError.redis(error)
        }
    }

    private struct ShardJSON: Decodable {
        var server: String?
        var roomCount: [String: Int32]?
        var updated: Int64?

        enum CodingKeys: String, CodingKey {
            case server, roomCount = "room_count", updated
        }
    }
}
