import Foundation
import GoIMConfig
import Logging
import NIOCore
import Redis

/// The cluster registry in Redis: one key per comet, `<prefix><hostname>`, holding its `CometInstance` as
/// JSON with a TTL the comet refreshes, plus an index set `<prefix>index` of hostnames. A comet that dies
/// without deregistering disappears when its key expires; readers then prune it from the index.
public struct CometRegistry: Sendable {
    public let redis: RedisClient
    public let prefix: String
    public let ttl: Duration

    public init(redis: RedisClient, configuration: RegistrySection) {
        self.redis = redis
        self.prefix = configuration.prefix
        self.ttl = configuration.ttl
    }

    var indexKey: String { "\(prefix)index" }

    func key(_ hostname: String) -> String { "\(prefix)\(hostname)" }

    /// Writes (or refreshes) `instance` with the registry TTL. Returns whether its record was there before: a comet
    /// that finds its own record gone learns that Redis lost data (restarted without persistence, flushed, failed over
    /// to a replica that lagged) or that its record expired, either way its sessions may be gone too.
    @discardableResult
    public func register(_ instance: CometInstance) async throws -> Bool {
        let json = try JSONEncoder().encode(instance)
        let seconds = max(1, Int64(ttl.components.seconds))
        let replies = try await redis.pipeline([
            RedisCommand("EXISTS", [.string(key(instance.hostname))]),
            RedisCommand("SET", [.string(key(instance.hostname)), .bytes(ByteBuffer(bytes: json)), .string("EX"), .integer(seconds)]),
            RedisCommand("SADD", [.string(indexKey), .string(instance.hostname)]),
        ])
        for reply in replies {
            if case .error(let message) = reply { throw RegistryError.redis(message) }
        }
        return replies.first?.int.map { $0 > 0 } ?? true
    }

    /// The live record of `hostname`, if any.
    public func instance(hostname: String) async throws -> CometInstance? {
        let reply = try await redis.send(RedisCommand("GET", [.string(key(hostname))]))
        if case .error(let message) = reply { throw RegistryError.redis(message) }
        guard let bytes = reply.bytes else { return nil }
        return try? JSONDecoder().decode(CometInstance.self, from: Data(bytes.readableBytesView))
    }

    /// Removes `hostname` at once (graceful shutdown).
    public func deregister(hostname: String) async throws {
        _ = try await redis.pipeline([
            RedisCommand("DEL", [.string(key(hostname))]),
            RedisCommand("SREM", [.string(indexKey), .string(hostname)]),
        ])
    }

    /// Every live comet, sorted by hostname. Index entries whose key has expired are pruned.
    public func instances() async throws -> [CometInstance] {
        let members = try await redis.send(RedisCommand("SMEMBERS", [.string(indexKey)]))
        guard case .array(let items) = members else {
            if case .error(let message) = members { throw RegistryError.redis(message) }
            return []
        }
        let hostnames = items.compactMap(\.string)
        guard !hostnames.isEmpty else { return [] }
        let values = try await redis.send(RedisCommand("MGET", hostnames.map { .string(key($0)) }))
        guard case .array(let records) = values, records.count == hostnames.count else {
            throw RegistryError.redis("MGET returned an unexpected reply")
        }
        var result: [CometInstance] = []
        var gone: [String] = []
        let decoder = JSONDecoder()
        for (hostname, record) in zip(hostnames, records) {
            guard let bytes = record.bytes, let instance = try? decoder.decode(CometInstance.self, from: Data(bytes.readableBytesView)) else {
                gone.append(hostname)
                continue
            }
            result.append(instance)
        }
        if !gone.isEmpty {
            _ = try? await redis.send(RedisCommand("SREM", [.string(indexKey)] + gone.map { .string($0) }))
        }
        return result.sorted { $0.hostname < $1.hostname }
    }
}

public enum RegistryError: Error, CustomStringConvertible {
    case redis(String)
    /// Another live comet is registered under the same host name (with another gRPC address).
    case duplicateHostname(String, otherRPCAddress: String)

    public var description: String {
        switch self {
        case .redis(let message): "cluster registry: Redis replied with an error: \(message)"
        case .duplicateHostname(let hostname, let other):
            "cluster registry: another comet is registered as \"\(hostname)\" (gRPC \(other)); its routing and pushes "
                + "would be mixed up with this one's. Give every comet its own env.host (GOIM_ENV_HOST)"
        }
    }
}
