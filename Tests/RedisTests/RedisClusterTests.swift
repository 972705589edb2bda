import Foundation
import NIOCore
import Redis
import Testing
import TestSupport

/// The client in cluster mode against a real Redis Cluster (3 masters, 3 replicas from Debian's redis-server).
@Suite("Redis client, real Redis Cluster", .startsServers, .serialized)
struct RedisClusterTests {
    private func withCluster(_ body: (RedisClusterProcess, RedisClient) async throws -> Void) async throws {
        let cluster = try await RedisClusterProcess.start()
        do {
            // One seed is enough: the client learns the rest from CLUSTER SLOTS.
            let configuration = RedisConfiguration(
                clusterNodes: [RedisNodeAddress(host: "127.0.0.1", port: cluster.nodes[0].port)],
                clusterRefreshInterval: .milliseconds(500))
            let client = RedisClient(configuration: configuration)
            try await body(cluster, client)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    private func cli(_ port: Int, _ arguments: String...) async throws -> String {
        try await RedisClusterProcess.redisCLI(["-p", "\(port)"] + arguments)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func slotsAgreeWithRedis() async throws {
        try await withCluster { cluster, _ in
            for key in ["foo", "bar", "123456789", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "mid_42", "key_abc"] {
                let slot = try await cli(cluster.nodes[0].port, "CLUSTER", "KEYSLOT", key)
                #expect(Int(slot) == RedisSlot.slot(key), "\(key)")
            }
        }
    }

    @Test func pipelinesAreSplitPerNodeAndKeepTheirOrder() async throws {
        try await withCluster { _, client in
            let keys = (0..<300).map { "key_\($0)" }
            let sets = try await client.pipeline(keys.map { RedisCommand("SET", [.string($0), .string("v-\($0)")]) })
            #expect(sets.allSatisfy { $0 == .simpleString("OK") })
            let gets = try await client.pipeline(keys.map { RedisCommand("GET", [.string($0)]) })
            #expect(gets.map(\.string) == keys.map { "v-\($0)" })
            // Multi-key commands across slots are split and merged.
            let values = try await client.mget(Array(keys.prefix(50)) + ["missing"])
            #expect(values.map { $0.map { String(buffer: $0) } } == keys.prefix(50).map { "v-\($0)" } + [nil])
            #expect(try await client.send(RedisCommand("EXISTS", ["key_1", "key_2", "nope"])) == .integer(2))
            #expect(try await client.del(Array(keys.prefix(40))) == 40)
            // MULTI…EXEC on one key goes to its node whole.
            let block = try await client.pipeline([
                RedisCommand("MULTI"), RedisCommand("DEL", ["ol_a"]), RedisCommand("HSET", ["ol_a", "1", "x"]),
                RedisCommand("EXPIRE", ["ol_a", "60"]), RedisCommand("EXEC"),
            ])
            #expect(block.last == .array([.integer(0), .integer(1), .integer(1)]))
            // A script whose keys share a hash tag.
            let script = try await client.send(RedisCommand("EVAL", [
                "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[2])", 2,
                "hist:{room:1}:meta", "hist:{room:1}:log", "x",
            ]))
            #expect(script == .null)
            // A script whose keys span slots is refused by Redis, in place.
            let crossSlot = try await client.pipeline([RedisCommand("EVAL", ["return 1", 2, "foo", "bar"])])
            guard case .error(let message) = crossSlot[0] else { Issue.record("expected CROSSSLOT"); return }
            #expect(message.hasPrefix("CROSSSLOT"))
        }
    }

    @Test func followsAskThenMovedDuringASlotMigration() async throws {
        try await withCluster { cluster, client in
            let slot = RedisSlot.slot("foo")
            let sourcePort = try #require(try await cluster.masterPort(forKey: "foo"))
            let masters = try await cluster.masters()
            let target = try #require(masters.first { $0.port != sourcePort })
            let sourceID = try await cli(sourcePort, "CLUSTER", "MYID")
            try await client.set("warm", "up")  // the client has read the topology
            _ = try await cli(target.port, "CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID)
            _ = try await cli(sourcePort, "CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", target.id)
            // "foo" is not on the source, so the source answers ASK and the client asks the target.
            try await client.set("foo", "moved-by-ask")
            #expect(try await client.get("foo").map { String(buffer: $0) } == "moved-by-ask")
            for master in masters {
                _ = try await cli(master.port, "CLUSTER", "SETSLOT", "\(slot)", "NODE", target.id)
            }
            // The client's table still names the source, which now answers MOVED.
            #expect(try await client.get("foo").map { String(buffer: $0) } == "moved-by-ask")
            try await client.set("foo", "after-moved")
            #expect(try await cli(target.port, "GET", "foo") == "after-moved")
        }
    }

    /// CLUSTER FAILOVER (no write lost, the old master answers MOVED), then kill -9 of the new master: commands keep
    /// working once the replica is promoted. Prints the error window of the kill.
    @Test func survivesFailoverAndAMasterKilled() async throws {
        try await withCluster { cluster, client in
            let keys = (0..<100).map { "mid_\($0)" }
            for key in keys { try await client.set(key, "v") }
            let master = try #require(try await cluster.masterPort(forKey: "foo"))
            let replica = try #require(try await cluster.masters().first { $0.port == master }?.replicaPort)

            try await cluster.failover(replicaPort: replica)
            try await client.set("foo", "after-failover")
            #expect(try await client.get("foo").map { String(buffer: $0) } == "after-failover")
            #expect(try await client.mget(keys).allSatisfy { $0 != nil })

            // kill -9 of the promoted master: its old master (now its replica) takes over after cluster-node-timeout.
            let killed = try #require(cluster.node(port: replica))
            let clock = ContinuousClock()
            let start = clock.now
            await killed.process.kill9()
            var failures = 0
            var successes = 0
            var firstFailure: ContinuousClock.Instant?
            var lastFailure: ContinuousClock.Instant?
            while clock.now - start < .seconds(20) {
                do {
                    try await client.set("foo", .string("during-\(successes)"))
                    _ = try await client.mget(keys)
                    successes += 1
                    if lastFailure != nil && successes > 20 { break }
                } catch {
                    failures += 1
                    firstFailure = firstFailure ?? clock.now
                    lastFailure = clock.now
                    successes = 0
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            let window = lastFailure.map { $0 - (firstFailure ?? start) } ?? .zero
            print("redis-cluster failover (kill -9 of a master, cluster-node-timeout \(cluster.nodeTimeout)): "
                + "\(failures) failed rounds, error window \(window)")
            #expect(successes > 20)
            #expect(try await client.get("foo") != nil)
            #expect(try await client.mget(keys).allSatisfy { $0 != nil })
        }
    }
}
