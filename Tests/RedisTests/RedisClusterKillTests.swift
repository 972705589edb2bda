import Foundation
import Logging
import NIOCore
import Redis
import Testing
import TestSupport

@Suite("Redis Cluster: the seed master killed", .startsServers)
struct RedisClusterKillTests {
    /// Every node given as a seed (as the stack does), then the first node, a master serving slot 0, killed -9.
    @Test func seedMasterKilled() async throws {
        let cluster = try await RedisClusterProcess.start()
        do {
            var logger = Logger(label: "redis-test")
            logger.logLevel = ProcessInfo.processInfo.environment["GOIM_TEST_REDIS_DEBUG"] == nil ? .critical : .debug
            let client = RedisClient(
                configuration: RedisConfiguration(
                    clusterNodes: cluster.nodes.map { RedisNodeAddress(host: "127.0.0.1", port: $0.port) },
                    clusterRefreshInterval: .seconds(1)),
                logger: logger)
            let keys = (0..<100).map { "key_\($0)" }
            for key in keys { try await client.set(key, "v") }
            let masters = try await cluster.masters()
            let victim = try #require(masters.first { $0.port == cluster.nodes[0].port } ?? masters.first)
            let clock = ContinuousClock()
            let start = clock.now
            let node = try #require(cluster.node(port: victim.port))
            await node.process.kill9()
            var lastFailure: ContinuousClock.Instant?
            var lastError = ""
            var successes = 0
            while clock.now - start < .seconds(15) {
                do {
                    _ = try await client.mget(keys)
                    successes += 1
                    if successes > 20 { break }
                } catch {
                    lastFailure = clock.now
                    lastError = "\(error)"
                    successes = 0
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            print("redis-cluster seed master killed: error window \((lastFailure ?? start) - start), last error: \(lastError)")
            #expect(successes > 20)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }
}
