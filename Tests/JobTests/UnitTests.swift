import Foundation
import GRPCCore
import GoIMProtocol
import GoIMRPC
import Logging
import NIOCore
import SwiftProtobuf
import Synchronization
import Testing

@testable import GoIMConfig
@testable import Job

/// Records how each ticket ended.
final class TicketLog: TicketSink {
    let outcomes = Mutex<[UInt64: DeliveryOutcome]>([:])

    func finish(_ id: UInt64, _ outcome: DeliveryOutcome) {
        outcomes.withLock { $0[id] = outcome }
    }

    var count: Int { outcomes.withLock { $0.count } }
    func outcome(_ id: UInt64) -> DeliveryOutcome? { outcomes.withLock { $0[id] } }
}

final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    func add() { atomic.add(1, ordering: .relaxed) }
    var value: Int { atomic.load(ordering: .relaxed) }
}

/// A pool of in-memory comets.
func memoryPool(
    _ hostnames: [String], roomTargets: RoomTargets = .all, concurrency: Int = 32
) -> (CometPool, [String: CometRecorder]) {
    var recorders: [String: CometRecorder] = [:]
    for hostname in hostnames { recorders[hostname] = CometRecorder(hostname: hostname) }
    let frozen = recorders
    var settings = CometPool.Settings()
    settings.concurrency = concurrency
    settings.grace = .milliseconds(200)
    settings.roomTargets = roomTargets
    let pool = CometPool(settings: settings, logger: testLogger(), connector: { instance in
        MemoryComet(recorder: frozen[instance.hostname] ?? CometRecorder(hostname: instance.hostname))
    }, source: { hostnames.map { CometInstanceAddress(hostname: $0, rpcAddress: "127.0.0.1:1") } })
    pool.apply(hostnames.map { CometInstanceAddress(hostname: $0, rpcAddress: "127.0.0.1:1") })
    return (pool, recorders)
}

func delivery(
    _ pool: CometPool, statistics: JobStatistics = JobStatistics(), skipAfter: Duration = .seconds(2),
    callTimeout: Duration = .seconds(5), deliveryDeadline: Duration = .seconds(10)
) -> Delivery {
    Delivery(
        pool: pool, statistics: statistics, backoff: .milliseconds(5), maxBackoff: .milliseconds(20),
        health: CometHealth(skipAfter: skipAfter, callTimeout: callTimeout, statistics: statistics), deliveryDeadline: deliveryDeadline, logger: testLogger())
}

/// Feeds `messages` to `aggregator` as the consumer does (reserve, append, start idle lanes), `pause` apart.
func feed(
    _ aggregator: RoomAggregator, _ messages: [String], targets: [String], sink: TicketLog, firstID: UInt64 = 0,
    delivery: Delivery, statistics: JobStatistics, pause: Duration = .zero, group: inout DiscardingTaskGroup
) async throws {
    for (offset, message) in messages.enumerated() {
        if pause > .zero, offset > 0 { try await Task.sleep(for: pause) }
        try await aggregator.reserve()
        let packet = PushEncoding.innerPacket(operation: 1000, body: Data(message.utf8))
        guard case .appended(let lanes) = aggregator.append(
            packet: packet, ticket: Ticket(id: firstID + UInt64(offset), sink: sink), targets: targets)
        else { Issue.record("aggregator retired"); return }
        for hostname in lanes {
            group.addTask {
                await aggregator.runLane(hostname, statistics: statistics) { body, _ in
                    let request = Goim_Comet_BroadcastRoomReq.with {
                        $0.roomID = aggregator.room
                        $0.proto = PushEncoding.envelope(body: body)
                    }
                    return await delivery.call(hostname) { try await $0.broadcastRoom(request) }
                }
            }
        }
    }
}

@Suite("Job units")
struct JobUnitTests {
    @Test("PUSH/BROADCAST envelope: op 9 around one inner packet, exactly goim's bytes")
    func envelopeBytes() {
        let proto = PushEncoding.envelope(operation: 1000, body: Data("hi".utf8))
        #expect(proto.ver == 1)
        #expect(proto.op == 9)
        #expect(proto.seq == 0)
        let expected: [UInt8] = [0, 0, 0, 18, 0, 16, 0, 1, 0, 0, 0x03, 0xE8, 0, 0, 0, 0] + Array("hi".utf8)
        #expect(Array(proto.body) == expected)
    }

    @Test("a room with history: inner packets carry their offsets, and one call carries one epoch")
    func historyEpochsSplitBatches() async throws {
        let aggregator = RoomAggregator(room: "live://1", batchLimit: 20, queueSize: 10)
        let sink = TicketLog()
        for (index, (offset, epoch)) in [(UInt64(7), "e1"), (8, "e1"), (1, "e2")].enumerated() {
            try await aggregator.reserve()
            let packet = PushEncoding.innerPacket(operation: 1000, body: Data("m\(offset)".utf8), sequence: Int32(offset))
            _ = aggregator.append(packet: packet, epoch: epoch, ticket: Ticket(id: UInt64(index), sink: sink), targets: ["c"])
        }
        let calls = Mutex<[(sequences: [Int32], epoch: String)]>([])
        await aggregator.runLane("c", statistics: JobStatistics()) { body, epoch in
            let sequences = (try? RawBatch.split(ByteBuffer(bytes: body)))?.map(\.sequence) ?? []
            calls.withLock { $0.append((sequences, epoch)) }
            return .delivered
        }
        let made = calls.withLock { $0 }
        #expect(made.map(\.sequences) == [[7, 8], [1]] && made.map(\.epoch) == ["e1", "e2"])
        #expect(sink.count == 3)
    }

    @Test("Broadcast speed is shared among comets; never a division by zero (goim bug 20)")
    func speed() {
        #expect(PushEncoding.speed(100, comets: 4) == 25)
        #expect(PushEncoding.speed(3, comets: 4) == 1)
        #expect(PushEncoding.speed(0, comets: 4) == 0)
        #expect(PushEncoding.speed(100, comets: 0) == 100)
        #expect(PushEncoding.speed(-5, comets: 2) == 0)
    }

    @Test("Transport failures are retried; answers with an error are not")
    func failureClassification() {
        if case .transient = CallFailure(RPCError(code: .unavailable, message: "")) {} else { Issue.record("unavailable") }
        if case .transient = CallFailure(RPCError(code: .deadlineExceeded, message: "")) {} else { Issue.record("deadline") }
        if case .permanent = CallFailure(RPCError(code: .unknown, message: "rpc pushmsg arg error")) {} else {
            Issue.record("unknown")
        }
        if case .permanent = CallFailure(RPCError(code: .invalidArgument, message: "")) {} else { Issue.record("invalid") }
    }

    @Test("A lone room message goes out at once, in one envelope with one packet")
    func loneMessageImmediate() async throws {
        let (pool, recorders) = memoryPool(["c1"])
        let statistics = JobStatistics()
        let aggregator = RoomAggregator(room: "live://1", batchLimit: 20, queueSize: 100)
        let sink = TicketLog()
        let start = ContinuousClock.now
        await withDiscardingTaskGroup { group in
            try? await feed(aggregator, ["lone"], targets: ["c1"], sink: sink, delivery: delivery(pool), statistics: statistics, group: &group)
        }
        let elapsed = ContinuousClock.now - start
        let calls = recorders["c1"]!.calls(.broadcastRoom)
        #expect(calls.count == 1)
        #expect(calls.first?.messages == ["lone"])
        #expect(calls.first?.proto.op == 9)
        #expect(sink.outcome(0) == .delivered)
        // No batching window was waited for: the aggregator has no timer on this path. (Wall time is not
        // asserted: tests run in parallel on a loaded machine; benchmarks measure latency.)
        _ = elapsed
    }

    @Test("While a batch is in flight, later messages gather into envelopes of at most `batch`, in order")
    func batchingUnderLoad() async throws {
        let (pool, recorders) = memoryPool(["c1", "c2"])
        recorders["c1"]!.setLatency(.milliseconds(20))
        recorders["c2"]!.setLatency(.milliseconds(3))
        let statistics = JobStatistics()
        let aggregator = RoomAggregator(room: "live://1", batchLimit: 20, queueSize: 1000)
        let sink = TicketLog()
        let messages = (0..<200).map { "m\($0)" }
        await withDiscardingTaskGroup { group in
            // The first message finds the room quiet; the rest arrive while it is being sent.
            try? await feed(aggregator, [messages[0]], targets: ["c1", "c2"], sink: sink, delivery: delivery(pool), statistics: statistics, group: &group)
            _ = await recorders["c1"]!.wait { $0.started == 1 }
            _ = await recorders["c2"]!.wait { $0.started == 1 }
            try? await feed(
                aggregator, Array(messages.dropFirst()), targets: ["c1", "c2"], sink: sink, firstID: 1, delivery: delivery(pool),
                statistics: statistics, group: &group)
        }
        #expect(sink.count == 200)
        for hostname in ["c1", "c2"] {
            let calls = recorders[hostname]!.calls(.broadcastRoom)
            #expect(calls.first?.messages.count == 1, "the first message is not held back")
            #expect(calls.allSatisfy { (1...20).contains($0.packets.count) })
            #expect(calls.flatMap(\.messages) == messages, "every message once, in order")
            #expect(calls.count < 200)
        }
        #expect(recorders["c1"]!.calls(.broadcastRoom).count <= 15, "the slow comet gets full batches")
        #expect(aggregator.pending == 0)
    }

    @Test("A full room queue makes the consumer wait instead of dropping (goim: room proto chan full)")
    func backPressure() async throws {
        let (pool, recorders) = memoryPool(["c1"])
        recorders["c1"]!.setFailing(true)
        let statistics = JobStatistics()
        let aggregator = RoomAggregator(room: "live://1", batchLimit: 2, queueSize: 4)
        let sink = TicketLog()
        let fed = Counter()
        await withDiscardingTaskGroup { group in
            for index in 0..<6 {
                try? await aggregator.reserve()
                fed.add()
                guard case .appended(let lanes) = aggregator.append(
                    packet: PushEncoding.innerPacket(operation: 1, body: Data("\(index)".utf8)),
                    ticket: Ticket(id: UInt64(index), sink: sink), targets: ["c1"])
                else { return }
                for hostname in lanes {
                    let sender = delivery(pool, statistics: statistics)
                    group.addTask {
                        await aggregator.runLane(hostname, statistics: statistics) { body, _ in
                            let request = Goim_Comet_BroadcastRoomReq.with {
                                $0.roomID = "live://1"
                                $0.proto = PushEncoding.envelope(body: body)
                            }
                            return await sender.call(hostname) { try await $0.broadcastRoom(request) }
                        }
                    }
                }
                if index == 3 {
                    // The queue is full now: the next reserve must wait until the comet recovers.
                    group.addTask {
                        try? await Task.sleep(for: .milliseconds(300))
                        #expect(fed.value == 4, "a 5th message was admitted into a full queue")
                        recorders["c1"]!.setFailing(false)
                    }
                }
            }
        }
        #expect(sink.count == 6)
        #expect(recorders["c1"]!.calls(.broadcastRoom).flatMap(\.messages) == (0..<6).map { "\($0)" })
        #expect(statistics.retries.load(ordering: .relaxed) > 0)
    }

    @Test("An idle aggregator retires atomically: appends after that go to a new one (goim bug 22)")
    func idleRetire() async throws {
        var table = RoomTable(batchLimit: 20, queueSize: 10, idle: .seconds(1))
        let first = table.aggregator(for: "r")
        #expect(!first.retireIfIdle(idle: .seconds(1)))
        #expect(first.retireIfIdle(idle: .seconds(1), now: .now + .seconds(2)))
        let sink = TicketLog()
        try await first.reserve()
        guard case .retired = first.append(packet: ByteBuffer(), ticket: Ticket(id: 0, sink: sink), targets: ["c"]) else {
            Issue.record("a retired aggregator accepted a message")
            return
        }
        table.remove(first)
        let second = table.aggregator(for: "r")
        #expect(second !== first)
        table.sweepIfDue(now: .now + .seconds(5))
        #expect(table.rooms.isEmpty)
    }

    @Test("Rooms filtering sends a room push only to comets that have the room (or whose rooms are unknown)")
    func roomsFilter() async throws {
        let (pool, _) = memoryPool(["a", "b", "c"], roomTargets: .rooms)
        pool.comet("a")!.rooms.withLock { $0 = ["live://1"] }
        pool.comet("b")!.rooms.withLock { $0 = [] }
        let targets = await pool.roomTargets("live://1")?.map(\.hostname)
        #expect(targets == ["a", "c"])
        let (all, _) = memoryPool(["a", "b"])
        #expect(await all.roomTargets("x")?.map(\.hostname) == ["a", "b"])
    }

    @Test("A comet missing from the registry is dropped only after the grace period")
    func registryGrace() async throws {
        let (pool, _) = memoryPool(["a", "b"])
        let now = ContinuousClock.now
        pool.apply([CometInstanceAddress(hostname: "a", rpcAddress: "127.0.0.1:1")], now: now + .milliseconds(100))
        #expect(pool.comet("b") != nil)
        pool.apply([CometInstanceAddress(hostname: "a", rpcAddress: "127.0.0.1:1")], now: now + .seconds(1))
        #expect(pool.comet("b") == nil)
        #expect(await pool.resolve("b") == nil)
        #expect(pool.comets.map(\.hostname) == ["a"])
    }

    @Test("A comet missing from the registry that still answers is kept; once its calls fail for skipAfter it is dropped")
    func answeringCometKept() async throws {
        let health = CometHealth(skipAfter: .milliseconds(500), callTimeout: .seconds(1))
        var settings = CometPool.Settings()
        settings.grace = .milliseconds(200)
        settings.keepAnswering = .seconds(30)
        let address: @Sendable (String) -> CometInstanceAddress = { CometInstanceAddress(hostname: $0, rpcAddress: "127.0.0.1:1") }
        let pool = CometPool(
            settings: settings, logger: testLogger(),
            connector: { MemoryComet(recorder: CometRecorder(hostname: $0.hostname)) }, health: health,
            source: { [address("a"), address("b")] })
        let start = ContinuousClock.now
        pool.apply([address("a"), address("b")], now: start)
        // b answered a call a moment ago; then the registry loses it (Redis restarted, or its writes time out).
        let answered = health.admit("b", now: start)
        health.finished("b", success: true, admission: answered, now: start + .milliseconds(10))
        // One call timing out on a busy machine does not make it stop answering.
        let late = health.admit("b", now: start + .milliseconds(20))
        health.finished("b", success: false, admission: late, now: start + .milliseconds(300))
        pool.apply([address("a")], now: start + .milliseconds(400))
        let next = health.admit("b", now: start + .milliseconds(500))
        health.finished("b", success: true, admission: next, now: start + .milliseconds(600))
        pool.apply([address("a")], now: start + .seconds(1))
        #expect(pool.comet("b") != nil, "a comet that answers stays while the registry lacks it")
        // Then every call fails for longer than skipAfter (it was killed): dropped at the next read.
        let refused = health.admit("b", now: start + .milliseconds(1100))
        health.finished("b", success: false, admission: refused, now: start + .milliseconds(1100))
        pool.apply([address("a")], now: start + .milliseconds(1500))
        #expect(pool.comet("b") != nil, "failing for less than skipAfter")
        pool.apply([address("a")], now: start + .seconds(2))
        #expect(pool.comet("b") == nil)
        // And one that never answered anything goes after the grace period, as before.
        pool.apply([address("a"), address("c")], now: start + .seconds(3))
        pool.apply([address("a")], now: start + .seconds(4))
        #expect(pool.comet("c") == nil)
        // Answering long ago (longer than keepAnswering) does not keep it either.
        let old = health.admit("a", now: start)
        health.finished("a", success: true, admission: old, now: start)
        pool.apply([], now: start + .seconds(40))
        #expect(pool.comets.isEmpty)
    }

    @Test("Zero comets: a broadcast is counted undeliverable, not a crash (goim bug 20)")
    func zeroComets() async throws {
        let (pool, _) = memoryPool([])
        let outcome = await delivery(pool).broadcast(.broadcast("x", speed: 10))
        guard case .undeliverable = outcome else {
            Issue.record("expected undeliverable, got \(outcome)")
            return
        }
        #expect(await pool.roomTargets("r") == nil)
    }

    @Test("Configuration: new job fields are read and validated")
    func configuration() throws {
        let reader = try ConfigReader(toml: """
            [consumer]
            fetchWait = "5ms"
            drainTimeout = "2s"
            [room]
            targets = "rooms"
            """)
        let configuration = try JobConfiguration(reader)
        #expect(configuration.consumer.fetchWait == .milliseconds(5))
        #expect(configuration.consumer.drainTimeout == .seconds(2))
        #expect(configuration.room.targets == "rooms")
        #expect(throws: ConfigError.self) {
            try JobConfiguration(ConfigReader(toml: "[room]\ntargets = \"some\""))
        }
        let comet = try JobConfiguration(ConfigReader(toml: "[comet]\nskipAfter = \"500ms\"\ndeliveryDeadline = \"3s\""))
        #expect(comet.comet.skipAfter == .milliseconds(500) && comet.comet.deliveryDeadline == .seconds(3))
        for bad in ["skipAfter = \"1ms\"", "deliveryDeadline = \"soon\""] {
            let error = #expect(throws: ConfigError.self) { try JobConfiguration(ConfigReader(toml: "[comet]\n\(bad)")) }
            let key = bad.split(separator: " ")[0]
            #expect("\(error.map { "\($0)" } ?? "")".contains(key), "the error names comet.\(key)")
        }
    }
}
