import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import StackHarness
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Faults that leave a process running but degraded: a comet that answers late, a comet job cannot reach (a network
/// partition, each service in its own network namespace), NATS away while logic is flooded.
extension FaultScenarioTests {
    /// Job's settings for the comet scenarios (as the stuck comet's): short call timeout, skipping after 500 ms of
    /// failures, giving up after 3 s, few in-flight slots and short room queues so that waiting on one comet would
    /// stall the others fast.
    static let degradedJobEnvironment = [
        "GOIM_COMET_TIMEOUT": "1s", "GOIM_COMET_SKIPAFTER": "500ms", "GOIM_COMET_DELIVERYDEADLINE": "3s",
        "GOIM_CONSUMER_MAXINFLIGHT": "64", "GOIM_ROOM_QUEUESIZE": "16",
    ]

    static func clients(of comet: String, _ fleet: CheckedFleet) -> Set<Int> {
        Set(fleet.clients.filter { $0.comet.withLock { $0 } == comet }.map(\.index))
    }

    /// How the slow comet is slowed: stopped for `stopped`, then running for `running`, over and over
    /// (GOIM_FAULT_SLOW=STOPPED/RUNNING in milliseconds, e.g. 80/40 for answers late by less than job's timeout).
    static let slowCycle: (stopped: Int, running: Int) = {
        let parts = (FaultScale.environment["GOIM_FAULT_SLOW"] ?? "").split(separator: "/").compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : (1100, 200)
    }()

    @Test("a slow comet (stopped 1.1 s of every 1.3 s: answers late, some beyond job's 1 s timeout): the other comet keeps at least 90 % of its delivery rate; the slow one's calls are retried until the deadline")
    func slowComet() async throws {
        var options = Stack.Options()
        options.cometEnvironment = ["GOIM_REGISTRY_TTL": "60s"]
        // Job's default in-flight window and room queues (4096, 1024): a slow comet is not skipped (its calls do not
        // all fail), so its late answers hold messages in flight; with the stuck scenario's 64 / 16 comet-a's rate
        // fell to 0.60 at 200 clients and 80 pushes/s (docs/reliability.md). GOIM_FAULT_SLOW_SMALLWINDOW=1 uses those.
        options.jobEnvironment = Self.degradedJobEnvironment
        let smallWindow = FaultScale.environment["GOIM_FAULT_SLOW_SMALLWINDOW"] == "1"
        if !smallWindow {
            options.jobEnvironment["GOIM_CONSUMER_MAXINFLIGHT"] = nil
            options.jobEnvironment["GOIM_ROOM_QUEUESIZE"] = nil
        }
        let ratio = Back()
        let window = Duration.milliseconds(Int64(FaultScale.seconds * 300))
        let slowFor = window * 2
        let (stopped, running) = Self.slowCycle
        let report = try await Self.scenario(
            "comet slow (SIGSTOP \(stopped) ms / SIGCONT \(running) ms), still registered", options: options,
            apart: { Self.clients(of: "comet-b", $0) },
            measure: { fleet, faultAt, records in
                let healthy = Self.deliveryRate(fleet, comet: "comet-a", faultAt: faultAt, window: window, records: records)
                ratio.value = healthy.ratio
                let slow = Self.deliveryRate(fleet, comet: "comet-b", faultAt: faultAt, window: window, records: records)
                return [healthy.note, slow.note]
            }
        ) { stack, _ in
            let slow = try #require(stack.comets[1].process.pid)
            // Duty cycling: the comet runs `running` ms in every `stopped + running`, so a gRPC answer comes up to
            // `stopped` ms late (plus its queue): some calls end late, others outlast job's timeout and are retried,
            // which is what a comet on an overloaded machine does. Its registry record stays fresh (60 s TTL).
            let end = ContinuousClock.now + slowFor
            var cycles = 0
            while ContinuousClock.now < end {
                kill(slow, SIGSTOP)
                try? await Task.sleep(for: .milliseconds(stopped))
                kill(slow, SIGCONT)
                try? await Task.sleep(for: .milliseconds(running))
                cycles += 1
            }
            kill(slow, SIGCONT)
            // Messages still waiting on it end by the delivery deadline (3 s): count them after it.
            try await Task.sleep(for: .seconds(3.5))
            let counters = try await Self.jobCounters(stack)
            let sizes = smallWindow ? "maxInFlight 64, room queue 16" : "maxInFlight 4096, room queue 1024 (defaults)"
            return ["comet-b slowed for \(DeliveryReport.format(slowFor)) (\(cycles) cycles); comet.skipAfter 500ms, timeout 1 s, deliveryDeadline 3 s; \(sizes); job: \(counters)"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect((ratio.value ?? 0) >= 0.9, "\(report)")
    }

    @Test(
        "each service in its own network namespace; iptables cuts job off one comet mid-stream: the other comet loses nothing and keeps its rate; the cut one resumes once healed",
        .enabled(if: NetworkNamespaces.unavailable == nil, "needs root, ip and iptables (NetworkNamespaces.unavailable)")
    )
    func partitionedComet() async throws {
        var options = Stack.Options()
        options.namespaces = true
        options.cometEnvironment = ["GOIM_REGISTRY_TTL": "60s"]
        options.jobEnvironment = Self.degradedJobEnvironment
        let ratio = Back()
        let marks = Marks()
        let window = Duration.milliseconds(Int64(FaultScale.seconds * 300))
        let partitionFor = window + .milliseconds(500)
        // Longer than the other scenarios: pushes keep coming for a few seconds after the partition heals.
        let seconds = FaultScale.seconds * 1.5
        let report = try await Self.scenario(
            "job partitioned from comet-b (iptables DROP, network namespaces)", options: options,
            apart: { Self.clients(of: "comet-b", $0) }, seconds: seconds,
            measure: { fleet, faultAt, records in
                let healthy = Self.deliveryRate(fleet, comet: "comet-a", faultAt: faultAt, window: window, records: records)
                ratio.value = healthy.ratio
                guard let resumed = marks["resumed"] else { return [healthy.note, "comet-b did not resume"] }
                // Every push acknowledged and sent a moment after comet-b's first delivery since the heal reaches its
                // clients (the backlog from the partition was given up after the deadline or delivered late).
                let cut = Self.clients(of: "comet-b", fleet)
                let after = records.filter { $0.ackedAt != nil && $0.sentAt >= resumed + .milliseconds(500) }
                func count() -> (expected: Int, delivered: Int) {
                    var expected = 0
                    var delivered = 0
                    for record in after {
                        for client in record.recipients where cut.contains(client) {
                            expected += 1
                            if fleet.clients[client].receipts.withLock({ $0[record.id] }) != nil { delivered += 1 }
                        }
                    }
                    return (expected, delivered)
                }
                try? await eventually("comet-b's clients get what was sent after it resumed", timeout: .seconds(15)) {
                    let current = count()
                    return current.expected == current.delivered
                }
                let resumedCount = count()
                marks.set("complete", resumedCount.expected == resumedCount.delivered && resumedCount.expected > 0 ? .now : nil)
                return [
                    healthy.note,
                    "comet-b: \(resumedCount.delivered) of \(resumedCount.expected) deliveries of pushes sent 500 ms after it resumed",
                ]
            }
        ) { stack, _ in
            let network = try #require(stack.network)
            let cut = stack.comets[1]
            // Job calls comet-b at the address comet-b registered: its own, in its namespace.
            try #require(cut.host != "127.0.0.1" && stack.jobs[0].output.contains("goim.rpc=\(cut.host):\(cut.rpcPort)"))
            try network.drop(from: "job-1", to: cut.host)
            do {
                try await Task.sleep(for: partitionFor)
            } catch {
                try? network.heal(from: "job-1", to: cut.host)
                throw error
            }
            let during = try await Self.jobCounters(stack)
            try network.heal(from: "job-1", to: cut.host)
            let healed = ContinuousClock.now
            return try await Self.waitForResumption(stack: stack, healed: healed, marks: marks, partitionFor: partitionFor, during: during)
        }
        #expect(report.lost == 0, "\(report)")
        #expect((ratio.value ?? 0) >= 0.9, "\(report)")
        #expect(marks["resumed"] != nil, "comet-b's deliveries did not resume after the partition healed: \(report)")
        #expect(marks["complete"] != nil, "\(report)")
    }

    /// Notes for the partition: addresses, how long, job's counters during it, when comet-b delivered again.
    private static func waitForResumption(
        stack: Stack, healed: ContinuousClock.Instant, marks: Marks, partitionFor: Duration, during: String
    ) async throws -> [String] {
        let network = try #require(stack.network)
        // Job's calls reach comet-b again (its gRPC connection survived or was made again): comet-b's push counter moves.
        let cut = stack.comets[1]
        let before = try await Self.cometDelivered(cut)
        try? await eventually("comet-b delivers again after the partition healed", timeout: .seconds(15)) {
            try await Self.cometDelivered(cut) > before
        }
        if try await Self.cometDelivered(cut) > before { marks.set("resumed", .now) }
        let after = marks["resumed"].map { DeliveryReport.format($0 - healed) } ?? "never"
        return [
            "services on \(network.members.values.map(\.address).sorted().joined(separator: ", ")) (one namespace each), test on \(network.gateway)",
            "job → comet-b dropped for \(DeliveryReport.format(partitionFor)); job during the partition: \(during)",
            "comet-b delivering again \(after) after the heal",
        ]
    }

    /// The push calls `comet` has taken from job so far (`goim_comet_rpc_pushes_total`, every kind).
    static func cometDelivered(_ comet: Stack.Comet) async throws -> Int {
        let reply = try await Stack.get("/metrics", port: comet.monitorPort, host: comet.host)
        return Self.metric(reply.body, prefix: "goim_comet_rpc_pushes_total") ?? 0
    }

    /// The sum of the samples of the Prometheus family `prefix` in `text`.
    static func metric(_ text: String, prefix: String) -> Int? {
        var total: Double?
        for line in text.split(separator: "\n") where line.hasPrefix(prefix) {
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { total = (total ?? 0) + value }
        }
        return total.map { Int($0) }
    }

    /// Job's counters that tell what it did with a comet it could not reach in time.
    static func jobCounters(_ stack: Stack) async throws -> String {
        let host = stack.jobs[0].host
        let text = try await Stack.get("/metrics", port: stack.jobMonitorPorts[0], host: host).body
        let partial = metric(text, prefix: #"goim_job_messages_finished_total{outcome="partial"}"#) ?? 0
        let skipped = metric(text, prefix: "goim_job_comet_skipped_total") ?? 0
        let retries = metric(text, prefix: "goim_job_comet_retries_total") ?? 0
        return "\(partial) messages partially delivered, \(skipped) calls skipped, \(retries) retried"
    }
}

/// Instants a scenario's closures note for its test (when a cut comet resumed).
final class Marks: Sendable {
    private let marks = Mutex<[String: ContinuousClock.Instant]>([:])
    subscript(name: String) -> ContinuousClock.Instant? { marks.withLock { $0[name] } }
    func set(_ name: String, _ instant: ContinuousClock.Instant?) { marks.withLock { $0[name] = instant } }
}
