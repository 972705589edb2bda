import Foundation
import StackHarness
import TestSupport
import Synchronization
import Testing

/// Sizes of a scenario. The defaults keep the suite within a few minutes on CI's 2 cores; `scripts/fault-tests`
/// runs it by hand with larger numbers.
enum FaultScale {
    static let environment = ProcessInfo.processInfo.environment
    /// Clients per scenario (spread over the comets, four rooms, every fourth on WebSocket).
    static let clients = Int(environment["GOIM_FAULT_CLIENTS"] ?? "") ?? 48
    /// Pushes per second through logic's HTTP API.
    static let rate = Double(environment["GOIM_FAULT_RATE"] ?? "") ?? 40
    /// How long the pusher runs; the fault comes after 30 % of it.
    static let seconds = Double(environment["GOIM_FAULT_SECONDS"] ?? "") ?? 6
}

/// Each scenario: a cluster of real processes, clients over TCP and WebSocket on its comets, a pusher recording what
/// logic acknowledged, one fault injected mid-stream, then the delivery check (docs/reliability.md).
@Suite("faults: processes killed, stopped and restarted under a push stream", .serialized, .startsServers)
struct FaultScenarioTests {
    /// Runs one scenario and returns its report (also printed, and appended to `GOIM_FAULT_REPORT`).
    static func scenario(
        _ name: String, options: Stack.Options = Stack.Options(), heartbeat: Duration? = nil, recovering: Bool = false,
        apart: @escaping @Sendable (CheckedFleet) -> Set<Int> = { _ in [] },
        excluded: @escaping @Sendable (Pusher.Record, ContinuousClock.Instant) -> Bool = { _, _ in false },
        seconds: Double = FaultScale.seconds,
        measure: @escaping @Sendable (CheckedFleet, ContinuousClock.Instant, [Pusher.Record]) async throws -> [String] = { _, _, _ in [] },
        prepare: @escaping @Sendable (Stack) async throws -> [String] = { _ in [] },
        inject: @escaping @Sendable (Stack, CheckedFleet) async throws -> [String]
    ) async throws -> DeliveryReport {
        var options = options
        options.comets = max(options.comets, 2)
        var result: DeliveryReport?
        try await Stack.run(options) { stack in
            let fleet = CheckedFleet(count: FaultScale.clients, rooms: 4, recovering: recovering)
            try await fleet.connect(to: stack.comets)
            defer { Task { await fleet.closeAll() } }
            try await eventually("logic counts every client online", timeout: .seconds(30)) {
                let total = try await stack.get("/goim/online/total").json?["data"] as? [String: Any]
                return total?["conn_count"] as? Int == FaultScale.clients
            }
            let prepared = try await prepare(stack)
            let heartbeats = heartbeat.map { interval in Task { await fleet.heartbeats(every: interval) } }
            defer { heartbeats?.cancel() }

            let pusher = Pusher()
            let count = Int(FaultScale.rate * seconds)
            let pushing = Task { await pusher.send(count: count, rate: FaultScale.rate, stack: stack, fleet: fleet) }
            try await Task.sleep(for: .milliseconds(Int64(seconds * 300)))
            let faultAt = ContinuousClock.now
            let notes = try await inject(stack, fleet)
            await pushing.value

            // Deliveries still on their way (redelivery after ackWait, retries) get time to land.
            func report() -> DeliveryReport {
                DeliveryReport(scenario: name, records: pusher.all, fleet: fleet, faultAt: faultAt, apart: apart(fleet)) {
                    excluded($0, faultAt)
                }
            }
            try? await eventually("every acknowledged push reaches every client that stayed connected", timeout: .seconds(30)) {
                let current = report()
                // Recovering clients get their room's pushes too (they may arrive after those of other rooms).
                return current.lost == 0 && (!recovering || current.reconnectedRoomDelivered == current.reconnectedRoomExpected)
            }
            var final = report()
            final.notes = prepared + notes + (try await measure(fleet, faultAt, pusher.all))
            final.publish()
            result = final
            // Stack.run attaches every process's last output to a thrown error: what a lost push needs.
            if final.lost > 0 { throw StackTestError("\(final.lost) acknowledged deliveries lost: \(final)") }
        }
        return try #require(result)
    }

    @Test("a job killed with SIGKILL and restarted: nothing acknowledged is lost")
    func jobKilledAndRestarted() async throws {
        let report = try await Self.scenario("job killed (-9), restarted after 1 s") { stack, _ in
            await stack.jobs[0].kill9()
            try await Task.sleep(for: .seconds(1))
            try await stack.jobs[0].start()
            return ["1 job; ackWait 2 s"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }

    @Test("one of two jobs killed with SIGKILL, not restarted: the other takes its messages over")
    func oneOfTwoJobsKilled() async throws {
        var options = Stack.Options()
        options.jobs = 2
        let report = try await Self.scenario("1 of 2 jobs killed (-9)", options: options) { stack, _ in
            await stack.jobs[1].kill9()
            return ["2 jobs; ackWait 2 s"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }

    @Test("a comet killed with SIGKILL: the others' clients lose nothing; its clients reconnect elsewhere")
    func cometKilled() async throws {
        let report = try await Self.scenario("comet killed (-9), its clients reconnect") { stack, fleet in
            let dead = stack.comets[1]
            await dead.process.kill9()
            let orphans = fleet.clients.filter { $0.comet.withLock { $0 } == dead.name }
            try await eventually("\(dead.name)'s clients see the close") { orphans.allSatisfy { !$0.isConnected } }
            let moved = try await fleet.reconnectLost(to: [stack.comets[0]])
            // Its sessions leave Redis once its record has expired (registry.ttl, 2 s here) and logic has missed it
            // for another TTL.
            let killed = ContinuousClock.now
            try await eventually("the dead comet's sessions are purged", timeout: .seconds(20)) {
                try Self.redisCount(stack, sessionsOf: dead.name) == 0
            }
            return ["\(moved) clients moved to \(stack.comets[0].name)",
                "its sessions purged from Redis \(DeliveryReport.format(ContinuousClock.now - killed)) after the clients moved"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.reconnectedClients == FaultScale.clients / 2)
    }

    @Test("with room history, a comet killed with SIGKILL: its clients reconnect with their offsets and recover every room push, once")
    func cometKilledWithHistory() async throws {
        var options = Stack.Options()
        options.logicEnvironment = ["GOIM_HISTORY_ROOMS": "live:10000:10m"]
        options.jobEnvironment = ["GOIM_HISTORY_ROOMS": "live:10000:10m"]
        let report = try await Self.scenario(
            "comet killed (-9), room history on, its clients recover", options: options, recovering: true
        ) { stack, fleet in
            let dead = stack.comets[1]
            await dead.process.kill9()
            let orphans = fleet.clients.filter { $0.comet.withLock { $0 } == dead.name }
            try await eventually("\(dead.name)'s clients see the close") { orphans.allSatisfy { !$0.isConnected } }
            let moved = try await fleet.reconnectLost(to: [stack.comets[0]])
            return ["\(moved) clients moved to \(stack.comets[0].name) with their offsets"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.reconnectedClients == FaultScale.clients / 2)
        // Room pushes: every one, once. Mids pushes and broadcasts sent while they were away are not in any history.
        #expect(report.reconnectedRoomExpected > 0)
        #expect(report.reconnectedRoomDelivered == report.reconnectedRoomExpected, "\(report)")
        #expect(report.reconnectedRoomDuplicates == 0, "\(report)")
    }

    @Test("a logic killed with SIGKILL: the pusher retries on the other with the same Idempotency-Key, no duplicates")
    func logicKilled() async throws {
        var options = Stack.Options()
        options.logics = 2
        let report = try await Self.scenario("logic killed (-9) of 2, pusher retries", options: options) { stack, _ in
            await stack.logics[0].process.kill9()
            return ["2 logics, pushes alternate; retried with the same Idempotency-Key"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.duplicates == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }

    /// Sessions are re-created by the Heartbeat a comet sends to logic for each client. The comets keep the default
    /// session refresh (10–20 min): what brings the sessions back is the comet finding its registry record gone at its
    /// next registry refresh (every 250 ms here), after which each connection writes its session again at its first
    /// client heartbeat (every 500 ms here) after a random delay of up to `protocol.sessionRewriteSpread` (1 s here).
    /// Mids pushes sent before that find nobody.
    static let sessionRewriteSpread = Duration.seconds(1)
    static let clientHeartbeat = Duration.milliseconds(500)

    @Test("Redis restarted with its data lost: room and broadcast pushes lose nothing; mids pushes again once the comets write their sessions again (default session refresh)")
    func redisRestarted() async throws {
        var options = Stack.Options()
        options.cometEnvironment = ["GOIM_PROTOCOL_SESSIONREWRITESPREAD": "1s"]
        let back = Back()
        let bound = Duration.milliseconds(250) + Self.sessionRewriteSpread + Self.clientHeartbeat + .seconds(1)
        let report = try await Self.scenario(
            "Redis restarted (data lost)", options: options, heartbeat: Self.clientHeartbeat,
            excluded: { record, faultAt in
                // Logic looked the sessions up somewhere between the first attempt and the acknowledgement.
                guard case .mids = record.target, let ackedAt = record.ackedAt else { return false }
                return ackedAt >= faultAt && record.sentAt < (back.at ?? faultAt) + bound
            }
        ) { stack, _ in
            await stack.redis.stop()
            try await stack.redis.start()
            back.at = .now
            return ["mids pushes acknowledged after the restart began and sent until \(DeliveryReport.format(bound)) after Redis was back are counted apart"]
        }
        #expect(report.lost == 0, "\(report)")
    }

    @Test("nats-server killed with SIGKILL and restarted on its store: every acknowledged push is delivered")
    func natsKilled() async throws {
        let report = try await Self.scenario("nats-server killed (-9), restarted after 1 s") { stack, _ in
            await stack.nats.kill9()
            try await Task.sleep(for: .seconds(1))
            try await stack.nats.start()
            return ["pushes refused while NATS is down are retried by the pusher"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect(report.notAcknowledged == 0, "\(report)")
    }

    @Test("a comet stopped (SIGSTOP) while it stays registered: the other comet keeps at least 90 % of its delivery rate; the stuck one's messages are given up after comet.skipAfter")
    func stuckComet() async throws {
        var options = Stack.Options()
        // The stopped comet's registry record must outlive the fault: a long TTL for the comets only.
        options.cometEnvironment = ["GOIM_REGISTRY_TTL": "60s"]
        // Few in-flight slots and short room queues, so that waiting on the stuck comet would stall everything fast.
        // GOIM_FAULT_SKIPAFTER (e.g. 60s) turns skipping off, to measure without it.
        let skipAfter = FaultScale.environment["GOIM_FAULT_SKIPAFTER"] ?? "500ms"
        options.jobEnvironment = [
            "GOIM_COMET_TIMEOUT": "1s", "GOIM_COMET_SKIPAFTER": skipAfter, "GOIM_COMET_DELIVERYDEADLINE": "3s",
            "GOIM_CONSUMER_MAXINFLIGHT": "64", "GOIM_ROOM_QUEUESIZE": "16",
        ]
        let ratio = Back()
        let window = Duration.milliseconds(Int64(FaultScale.seconds * 300))
        let report = try await Self.scenario(
            "comet stopped (SIGSTOP), still registered", options: options,
            apart: { fleet in Set(fleet.clients.filter { $0.comet.withLock { $0 } == "comet-b" }.map(\.index)) },
            measure: { fleet, faultAt, records in
                let rate = Self.deliveryRate(fleet, comet: "comet-a", faultAt: faultAt, window: window, records: records)
                ratio.value = rate.ratio
                return [rate.note]
            }
        ) { stack, _ in
            let stuck = try #require(stack.comets[1].process.pid)
            kill(stuck, SIGSTOP)
            try await Task.sleep(for: window + .milliseconds(500))
            kill(stuck, SIGCONT)
            return ["comet-b stopped for \(DeliveryReport.format(window + .milliseconds(500))); comet.skipAfter \(skipAfter), timeout 1 s; maxInFlight 64, room queue 16"]
        }
        #expect(report.lost == 0, "\(report)")
        #expect((ratio.value ?? 0) >= 0.9, "\(report)")
    }

    /// The share of the deliveries that the pushes sent in the `window` after the fault addressed to `comet`'s
    /// clients and that reached them within `onTime` of being sent, against the same share for the window before: the
    /// ratio of the comet's delivery rate during the fault to its rate without it. Counting by the pushes sent in each
    /// window keeps the pusher's own pace out of it (on a busy machine it sends fewer in one window than in another) and
    /// the windows' edges too; a comet stalled behind the faulty one delivers late, and late deliveries do not count.
    static func deliveryRate(
        _ fleet: CheckedFleet, comet: String, faultAt: ContinuousClock.Instant, window: Duration, records: [Pusher.Record],
        onTime: Duration = .milliseconds(500)
    ) -> (ratio: Double, note: String) {
        let clients = fleet.clients.filter { $0.comet.withLock { $0 } == comet }
        let receipts = clients.map { client in (client.index, client.receipts.withLock { $0.mapValues(\.first) }) }
        let byClient = Dictionary(uniqueKeysWithValues: receipts)
        func share(from start: ContinuousClock.Instant) -> (onTime: Int, addressed: Int) {
            var onTimeCount = 0
            var addressed = 0
            for record in records where record.ackedAt != nil && record.sentAt >= start && record.sentAt < start + window {
                for client in record.recipients {
                    guard let received = byClient[client] else { continue }
                    addressed += 1
                    if let first = received[record.id], first - record.sentAt <= onTime { onTimeCount += 1 }
                }
            }
            return (onTimeCount, addressed)
        }
        let before = share(from: faultAt - window)
        let after = share(from: faultAt)
        let rateBefore = before.addressed > 0 ? Double(before.onTime) / Double(before.addressed) : 0
        let rateAfter = after.addressed > 0 ? Double(after.onTime) / Double(after.addressed) : 0
        let ratio = rateBefore > 0 ? rateAfter / rateBefore : 0
        return (ratio, String(format: "%@ delivery rate during the fault: %.2f of the rate before (%d of %d deliveries within %@ vs %d of %d, pushes sent in %@ each)", comet, ratio, after.onTime, after.addressed, DeliveryReport.format(onTime), before.onTime, before.addressed, DeliveryReport.format(window)))
    }

    /// How many `key_*` sessions in Redis name `server`.
    static func redisCount(_ stack: Stack, sessionsOf server: String) throws -> Int {
        let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', 'key_*')) do if redis.call('GET', k) == ARGV[1] then n = n + 1 end end return n"
        let output = try runProgram("redis-cli", ["-h", stack.redis.host, "-p", "\(stack.redis.port)", "EVAL", script, "0", server])
        return Int(output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    static func runProgram(_ name: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [name] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A value a scenario's closure sets for the test to read (when a restarted dependency was back, a measured ratio).
final class Back: Sendable {
    private let instant = Mutex<ContinuousClock.Instant?>(nil)
    private let number = Mutex<Double?>(nil)
    var at: ContinuousClock.Instant? {
        get { instant.withLock { $0 } }
        set { instant.withLock { $0 = newValue } }
    }
    var value: Double? {
        get { number.withLock { $0 } }
        set { number.withLock { $0 = newValue } }
    }
}
