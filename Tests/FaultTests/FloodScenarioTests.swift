import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import StackHarness
import Synchronization
import TestSupport
import Testing

/// Logic flooded with pushes while nats-server is down: every push must be refused at once (goim's -500),
/// nothing may pile up in logic's memory, and pushes are accepted again once NATS is back.
extension FaultScenarioTests {
    /// Sizes of the flood (GOIM_FAULT_FLOOD_PUSHES, GOIM_FAULT_FLOOD_CONNECTIONS by hand).
    static let floodPushes = Int(FaultScale.environment["GOIM_FAULT_FLOOD_PUSHES"] ?? "") ?? 20_000
    static let floodConnections = Int(FaultScale.environment["GOIM_FAULT_FLOOD_CONNECTIONS"] ?? "") ?? 64
    /// What logic's resident memory may grow by during the flood (measured: see docs/reliability.md).
    static let floodRSSBound = 16 << 20
    /// The slowest refusal allowed: a refusal must not wait for a publish timeout (nats.publishTimeout, 5 s).
    static let floodSlowestRefusal = Duration.seconds(2)

    /// logic's VmRSS in bytes, from /proc.
    static func residentBytes(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
        }
        return nil
    }

    /// Runs `pushes` pushes to a room over `connections` keep-alive connections; returns (status → count, the slowest
    /// reply, failed requests).
    static func flood(_ stack: Stack, pushes: Int, connections: Int, tag: String) async -> (statuses: [String: Int], slowest: Duration, failures: [String]) {
        let logic = stack.logics[0]
        let tally = FloodTally()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<connections {
                group.addTask {
                    do {
                        try await TestClient.withClient(host: logic.host, port: logic.httpPort) { client in
                            while true {
                                let id = tally.next.wrappingAdd(1, ordering: .relaxed).oldValue
                                guard id < pushes else { return }
                                let started = ContinuousClock.now
                                let response = try await client.execute(
                                    TestClient.Request(
                                        "/goim/push/room?operation=1000&type=live&room=flood", method: .post, headers: [:],
                                        body: ByteBuffer(string: "\(tag)\(id)")))
                                let took = ContinuousClock.now - started
                                let body = response.body.map { String(buffer: $0) } ?? ""
                                let code = (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["code"] as? Int
                                tally.statuses.withLock { $0["HTTP \(response.status.code) code \(code.map(String.init) ?? "?")", default: 0] += 1 }
                                tally.slowest.withLock { $0 = max($0, took) }
                            }
                        }
                    } catch {
                        tally.failures.withLock { if $0.count < 5 { $0.append("\(error)") } }
                    }
                }
            }
        }
        return (tally.statuses.withLock { $0 }, tally.slowest.withLock { $0 }, tally.failures.withLock { $0 })
    }

    @Test("logic flooded while nats-server is down: every push refused at once (-500), RSS bounded, accepted again once NATS is back")
    func floodWhileNATSDown() async throws {
        try await Stack.run { stack in
            let pid = try #require(stack.logics[0].process.pid)
            // Warm up with NATS running: the same connections and code paths, so that what grows later is the refusals'.
            let warm = await Self.flood(stack, pushes: 2_000, connections: Self.floodConnections, tag: "warm")
            #expect(warm.statuses == ["HTTP 200 code 0": 2_000], "\(warm)")
            let baseline = try #require(Self.residentBytes(pid))

            await stack.nats.kill9()
            let downAt = ContinuousClock.now
            try await eventually("logic refuses pushes once NATS is gone") {
                try await stack.request(.post, "/goim/push/room?operation=1000&type=live&room=flood", body: "probe").code == -500
            }
            let noticed = ContinuousClock.now - downAt

            let peak = FloodTally()
            peak.peak.store(baseline, ordering: .relaxed)
            let sampling = Task {
                while !Task.isCancelled {
                    if let bytes = Self.residentBytes(pid) { peak.peak.max(bytes, ordering: .relaxed) }
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
            let started = ContinuousClock.now
            let result = await Self.flood(stack, pushes: Self.floodPushes, connections: Self.floodConnections, tag: "flood")
            let took = ContinuousClock.now - started
            sampling.cancel()
            _ = await sampling.value
            let after = Self.residentBytes(pid) ?? 0
            let growth = peak.peak.load(ordering: .relaxed) - baseline

            try await stack.nats.start()
            let backAt = ContinuousClock.now
            try await eventually("pushes accepted again once NATS is back", timeout: .seconds(30)) {
                let reply = try await stack.request(.post, "/goim/push/room?operation=1000&type=live&room=flood", body: "back")
                return reply.status == 200 && reply.code == 0
            }
            let accepting = ContinuousClock.now - backAt

            let mb = { (bytes: Int) in String(format: "%.1f MB", Double(bytes) / 1_048_576) }
            let rate = Double(Self.floodPushes) / (Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
            let row = "| logic flooded while nats-server is down | \(Self.floodPushes) pushes over \(Self.floodConnections) keep-alive connections in \(DeliveryReport.format(took)) (\(Int(rate))/s): \(result.statuses.map { "\($0.value) × \($0.key)" }.sorted().joined(separator: ", ")); slowest reply \(DeliveryReport.format(result.slowest)) | RSS \(mb(baseline)) before, peak \(mb(peak.peak.load(ordering: .relaxed))) (+\(mb(growth))), \(mb(after)) after | refusing \(DeliveryReport.format(noticed)) after the kill; accepting \(DeliveryReport.format(accepting)) after nats-server started again |"
            print(row)
            if let path = FaultScale.environment["GOIM_FAULT_FLOOD_REPORT"], !path.isEmpty {
                try? (row + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            }

            #expect(result.failures.isEmpty, "requests failed (no reply): \(result.failures)")
            // goim's -500 (HTTP 200, as goim sends it, when NATS is away; 503 when too many publishes wait).
            let refused = result.statuses.filter { $0.key.hasSuffix("code -500") }.values.reduce(0, +)
            #expect(refused == Self.floodPushes, "every push refused with -500: \(row)")
            #expect(result.slowest < Self.floodSlowestRefusal, "a refusal waited: \(row)")
            #expect(growth < Self.floodRSSBound, "logic's RSS grew by \(mb(growth)): \(row)")
        }
    }
}

/// What the flood's connections saw, shared by their tasks.
final class FloodTally: Sendable {
    let statuses = Mutex<[String: Int]>([:])
    let slowest = Mutex<Duration>(.zero)
    let failures = Mutex<[String]>([])
    /// The next push id to send.
    let next = Atomic<Int>(0)
    /// The highest RSS sampled.
    let peak = Atomic<Int>(0)
}
