import Foundation
import StackHarness
import TestSupport
import Testing

/// The push path on a three-node NATS cluster (JetStream on each, the push stream and job's consumer with three
/// replicas): one server killed with SIGKILL while pushes flow. Logic and job are given all three URLs.
/// docs/nats-cluster.md describes what R1 and R3 guarantee; these scenarios measure R3.
extension FaultScenarioTests {
    static let pushStream = "GOIM_PUSH"
    static let durable = "goim-job"
    static let logicClient = "goim-logic-logic-1"
    static let jobClient = "goim-job-job-1"

    static var clusterOptions: Stack.Options {
        var options = Stack.Options()
        options.natsNodes = 3
        options.natsReplicas = 3
        // GOIM_FAULT_PUBLISHTIMEOUT (e.g. 10s): logic's nats.publishTimeout, to measure a budget that outlasts the
        // stream leader's election.
        if let timeout = FaultScale.environment["GOIM_FAULT_PUBLISHTIMEOUT"] {
            options.logicEnvironment["GOIM_NATS_PUBLISHTIMEOUT"] = timeout
        }
        return options
    }

    /// Checks that the stream has three replicas and puts its leader on a server logic is not connected to (asking
    /// the leader to step down while it is logic's), so that killing the leader and killing logic's server are two
    /// different faults. Returns where everything is, for the report.
    static func separateLeaderFromLogic(_ stack: Stack) async throws -> [String] {
        let cluster = try #require(stack.natsCluster)
        try await eventually("the push stream has 3 replicas and a leader", timeout: .seconds(30)) {
            cluster.streamReplicas(pushStream) == 3 && cluster.streamLeader(pushStream) != nil
        }
        let logicServers = Set(cluster.nodes(servingClient: logicClient).map(\.name))
        try #require(logicServers.count == 1, "logic should be connected to one server: \(logicServers)")
        var stepDowns = 0
        while let leader = cluster.streamLeader(pushStream), logicServers.contains(leader), stepDowns < 5 {
            try await cluster.stepDownStreamLeader(pushStream)
            stepDowns += 1
        }
        let leaders = cluster.leaders(pushStream)
        try #require(leaders.stream.map { !logicServers.contains($0) } == true, "stream leader still on logic's server")
        let timeout = FaultScale.environment["GOIM_FAULT_PUBLISHTIMEOUT"] ?? "5s"
        return ["stream R\(cluster.streamReplicas(pushStream) ?? 0), nats.publishTimeout \(timeout)"]
    }

    /// Where the stream leader, the consumer leader, logic and job are.
    static func placement(_ cluster: NATSCluster) -> String {
        let leaders = cluster.leaders(pushStream)
        let logic = cluster.nodes(servingClient: logicClient).map(\.name).joined(separator: ",")
        let job = cluster.nodes(servingClient: jobClient).map(\.name).joined(separator: ",")
        return "stream leader \(leaders.stream ?? "none"), consumer leader \(leaders.consumers[durable] ?? "none"), logic on \(logic), job on \(job)"
    }

    /// Waits until the stream has a leader among the running servers again; returns how long that took.
    static func waitForNewLeader(_ cluster: NATSCluster, killed: String, since: ContinuousClock.Instant) async throws -> String {
        try await eventually("a new stream leader", timeout: .seconds(30)) {
            guard let leader = cluster.streamLeader(pushStream) else { return false }
            return leader != killed
        }
        return "new stream leader \(cluster.streamLeader(pushStream) ?? "?") after \(DeliveryReport.format(.now - since))"
    }

    @Test("NATS cluster R3: the stream leader killed with SIGKILL while pushes flow; every acknowledged push is delivered")
    func natsStreamLeaderKilled() async throws {
        let report = try await Self.scenario(
            "NATS cluster (3 nodes, R3): stream leader killed (-9)", options: Self.clusterOptions,
            prepare: Self.separateLeaderFromLogic
        ) { stack, _ in
            let cluster = try #require(stack.natsCluster)
            let before = Self.placement(cluster)
            let leader = try #require(cluster.streamLeader(Self.pushStream))
            let killedAt = ContinuousClock.now
            try await #require(cluster.node(named: leader)).process.kill9()
            let elected = try await Self.waitForNewLeader(cluster, killed: leader, since: killedAt)
            // The consumer is a Raft group of its own: when its leader was on the killed server too, it elects one
            // apart, and job's fetches wait for it (job stays bound to the durable, not to a server).
            try await eventually("a consumer leader on a running server", timeout: .seconds(30)) {
                let consumerLeader = cluster.leaders(Self.pushStream).consumers[Self.durable]
                return consumerLeader != nil && consumerLeader != leader
            }
            let consumer = "consumer leader on a running server after \(DeliveryReport.format(.now - killedAt))"
            try await Task.sleep(for: .seconds(1))
            return ["before: \(before); killed \(leader)", elected, consumer, "after: \(Self.placement(cluster))"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
        #expect(report.acknowledged == report.pushesSent, "\(report)")
    }

    @Test("NATS cluster R3: the server logic is connected to killed with SIGKILL while pushes flow; logic reconnects to another, every acknowledged push is delivered")
    func natsLogicServerKilled() async throws {
        let report = try await Self.scenario(
            "NATS cluster (3 nodes, R3): logic's server killed (-9)", options: Self.clusterOptions,
            prepare: Self.separateLeaderFromLogic
        ) { stack, _ in
            let cluster = try #require(stack.natsCluster)
            let killed = try await Self.killServer(of: Self.logicClient, named: "logic", in: cluster)
            try await Task.sleep(for: .seconds(1))
            return [killed.before, killed.reconnected, "after: \(Self.placement(cluster))"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }

    @Test("NATS cluster R3: the server job is connected to, leading job's consumer too, killed with SIGKILL while pushes flow; job reconnects and the consumer goes on")
    func natsJobServerKilled() async throws {
        let report = try await Self.scenario(
            "NATS cluster (3 nodes, R3): job's server killed (-9), consumer leader on it", options: Self.clusterOptions,
            prepare: { stack in
                let cluster = try #require(stack.natsCluster)
                try await eventually("the consumer has a leader", timeout: .seconds(30)) {
                    cluster.leaders(Self.pushStream).consumers[Self.durable] != nil
                }
                let server = try #require(cluster.nodes(servingClient: Self.jobClient).first)
                let moved = try await cluster.moveConsumerLeader(stream: Self.pushStream, durable: Self.durable, to: server.name)
                try #require(moved, "the consumer's leader did not move to \(server.name)")
                return ["stream R\(cluster.streamReplicas(Self.pushStream) ?? 0)"]
            }
        ) { stack, _ in
            let cluster = try #require(stack.natsCluster)
            let killed = try await Self.killServer(of: Self.jobClient, named: "job", in: cluster)
            let (server, killedAt) = (killed.server, killed.at)
            try await eventually("a consumer leader on a running server", timeout: .seconds(30)) {
                let leader = cluster.leaders(Self.pushStream).consumers[Self.durable]
                return leader != nil && leader != server.name
            }
            let elected = "consumer leader on a running server after \(DeliveryReport.format(.now - killedAt))"
            try await Task.sleep(for: .seconds(1))
            return [killed.before, killed.reconnected, elected, "after: \(Self.placement(cluster))"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }

    /// Kills -9 the node `client` is connected to and waits until the client is on another one; returns the node, when
    /// it was killed, and report lines (the placement before, how long the reconnect took).
    static func killServer(
        of client: String, named name: String, in cluster: NATSCluster
    ) async throws -> (server: NATSCluster.Node, at: ContinuousClock.Instant, before: String, reconnected: String) {
        let before = placement(cluster)
        let server = try #require(cluster.nodes(servingClient: client).first)
        let killedAt = ContinuousClock.now
        await server.process.kill9()
        try await eventually("\(name) reconnected to another server", timeout: .seconds(30)) {
            cluster.nodes(servingClient: client).contains { $0.name != server.name }
        }
        return (server, killedAt, "before: \(before); killed \(server.name)", "\(name) reconnected after \(DeliveryReport.format(.now - killedAt))")
    }
}
