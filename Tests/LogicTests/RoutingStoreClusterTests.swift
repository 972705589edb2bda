import Logic
import Redis
import Testing
import TestSupport

/// `RedisRoutingStore` and `RedisOnlineStore` on a real Redis Cluster: goim's key names in different slots, the
/// scripts split per key (docs/redis-cluster.md), the same results as with a single Redis.
@Suite("Routing store on a Redis Cluster", .startsServers)
struct RoutingStoreClusterTests {
    @Test func sessionsRefreshDeleteAndPurge() async throws {
        let cluster = try await RedisClusterProcess.start()
        do {
            let redis = RedisClient(configuration: RedisConfiguration(
                clusterNodes: cluster.nodes.map { RedisNodeAddress(host: "127.0.0.1", port: $0.port) }))
            #expect(redis.isCluster)
            let store = RedisRoutingStore(redis: redis, expire: .seconds(60))
            let sessions = (1...20).map { Session(mid: Int64($0 % 5), key: "k\($0)", server: $0 % 2 == 0 ? "c1" : "c2") }
            try await store.addMappings(sessions)
            #expect(try await store.servers(forKeys: sessions.map(\.key) + ["nope"]) == sessions.map(\.server) + [nil])
            let found = try await store.sessions(forMids: [1, 2])
            #expect(Set(found) == Set(sessions.filter { $0.mid == 1 || $0.mid == 2 }))
            // For mid 0 a live key always counts as held by someone else (RoutingStore.keysHeldByOthers).
            #expect(try await store.keysHeldByOthers(sessions) == sessions.map { $0.mid == 0 })

            // Heartbeat of a live session, then of one whose key_ and mid_ field were lost.
            #expect(try await store.refreshMapping(mid: 1, key: "k1", server: "c2"))
            _ = try await redis.del(["key_k1"])
            _ = try await redis.hdel("mid_1", "k1")
            #expect(try await store.refreshMapping(mid: 1, key: "k1", server: "c2") == false)
            #expect(try await store.servers(forKeys: ["k1"]) == ["c2"])
            #expect(try await redis.hget("mid_1", "k1").map { String(buffer: $0) } == "c2")

            // Disconnect only removes what still names the caller (goim bug 1).
            #expect(try await store.deleteMapping(mid: 1, key: "k1", server: "c1") == false)
            #expect(try await store.servers(forKeys: ["k1"]) == ["c2"])
            #expect(try await store.deleteMapping(mid: 1, key: "k1", server: "c2"))
            #expect(try await store.servers(forKeys: ["k1"]) == [nil])
            #expect(try await redis.hget("mid_1", "k1") == nil)

            // A dead comet's sessions go at once.
            let purged = try await store.purgeSessions(server: "c1", batch: 3) { true }
            #expect(purged == sessions.filter { $0.server == "c1" }.count)
            #expect(try await store.servers(forKeys: sessions.filter { $0.server == "c1" }.map(\.key)).allSatisfy { $0 == nil })

            let online = RedisOnlineStore(redis: redis, expire: .seconds(60))
            try await online.storeOnline(ServerOnline(server: "c1", roomCount: ["live://1": 3, "live://2": 1], updated: 7))
            try await online.storeOnline(ServerOnline(server: "c2", roomCount: ["live://1": 2], updated: 8))
            let loaded = try await online.loadOnline(servers: ["c1", "c2", "c3"])
            #expect(loaded[0]?.roomCount == ["live://1": 3, "live://2": 1])
            #expect(loaded[1]?.roomCount == ["live://1": 2])
            #expect(loaded[2] == nil)
            try await online.deleteOnline(servers: ["c1", "c2"])
            #expect(try await online.loadOnline(servers: ["c1", "c2"]) == [nil, nil])
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }
}
