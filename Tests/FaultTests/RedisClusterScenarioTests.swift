import Foundation
import StackHarness
import Synchronization
import TestSupport
import Testing

/// The stack on a Redis Cluster (3 masters, 3 replicas, cluster-node-timeout 1 s): a coordinated `CLUSTER FAILOVER`,
/// then kill -9 of the promoted master, while pushes flow (room, mids and broadcast through logic's HTTP API) and new
/// clients connect (comet → logic → Redis). docs/redis-cluster.md records the measured windows.
extension FaultScenarioTests {
    static var redisClusterOptions: Stack.Options {
        var options = Stack.Options()
        options.redisCluster = true
        return options
    }

    /// Connects one new client at a time until cancelled; records when connects failed.
    final class ConnectChurn: Sendable {
        let attempts = Mutex(0)
        let failures = Mutex<[ContinuousClock.Instant]>([])

        func run(stack: Stack, firstMid: Int64) async {
            var mid = firstMid
            while !Task.isCancelled {
                let fleet = CheckedFleet(count: 1, rooms: 1, firstMid: mid)
                mid += 1
                attempts.withLock { $0 += 1 }
                let start = ContinuousClock.now
                do {
                    try await fleet.connect(to: stack.comets)
                    await fleet.closeAll()
                } catch {
                    failures.withLock { $0.append(start) }
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }

        var summary: String {
            let failed = failures.withLock { $0 }
            let window = failed.count > 1 ? failed.last! - failed.first! : .zero
            return "connects during the fault: \(attempts.withLock { $0 }) tried, \(failed.count) failed, "
                + "connect error window \(DeliveryReport.format(window))"
        }
    }

    @Test("Redis Cluster: CLUSTER FAILOVER on a replica while pushes flow and clients connect")
    func redisClusterManualFailover() async throws {
        let churn = ConnectChurn()
        let report = try await Self.scenario(
            "Redis Cluster (3 masters + 3 replicas): CLUSTER FAILOVER on a replica", options: Self.redisClusterOptions
        ) { stack, _ in
            let cluster = try #require(stack.redisCluster)
            let connecting = Task { await churn.run(stack: stack, firstMid: 90_000) }
            defer { connecting.cancel() }
            let master = try #require(try await cluster.masters().first)
            let replica = try #require(master.replicaPort)
            let failoverAt = ContinuousClock.now
            try await cluster.failover(replicaPort: replica)
            let failedOver = "CLUSTER FAILOVER on \(replica): promoted after \(DeliveryReport.format(.now - failoverAt))"
            try await Task.sleep(for: .seconds(2))
            connecting.cancel()
            await connecting.value
            return [failedOver, churn.summary]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }

    @Test("Redis Cluster: a master killed with SIGKILL while pushes flow and clients connect; its replica takes over")
    func redisClusterMasterKilled() async throws {
        let churn = ConnectChurn()
        let report = try await Self.scenario(
            "Redis Cluster (3 masters + 3 replicas, cluster-node-timeout 1 s): a master killed (-9)",
            options: Self.redisClusterOptions
        ) { stack, _ in
            let cluster = try #require(stack.redisCluster)
            let connecting = Task { await churn.run(stack: stack, firstMid: 90_000) }
            defer { connecting.cancel() }
            let master = try #require(try await cluster.masters().first)
            let killedAt = ContinuousClock.now
            let killed = try #require(cluster.node(port: master.port))
            await killed.process.kill9()
            try await cluster.waitUntilHealthy()
            let promoted = "kill -9 of master \(master.port): replica \(master.replicaPort ?? 0) promoted, cluster ok after "
                + DeliveryReport.format(.now - killedAt)
            try await Task.sleep(for: .seconds(2))
            connecting.cancel()
            await connecting.value
            return [promoted, churn.summary]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }
}
