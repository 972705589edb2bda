import Foundation
import GoIMRPC
import Testing

@testable import Job

/// One comet that stops answering must not hold up delivery to the others (issue 15: a stuck comet filled a room's
/// queue, then every in-flight slot, and stopped the job for every comet).
@Suite("a stuck comet is skipped, the others keep going")
struct StuckCometTests {
    @Test("CometHealth: stuck when every call fails for skipAfter, or nothing finishes for timeout + skipAfter; one probe at a time; slow successes never")
    func health() {
        let health = CometHealth(skipAfter: .seconds(1), callTimeout: .seconds(1))
        let start = ContinuousClock.now
        func at(_ milliseconds: Int64) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }
        // Calls that finish keep a busy comet healthy.
        #expect(health.admit("a", now: at(0)) == .call)
        health.finished("a", success: true, admission: .call, now: at(900))
        #expect(health.admit("a", now: at(950)) == .call)
        #expect(health.admit("a", now: at(1800)) == .call)
        // Nothing finishes for callTimeout + skipAfter (2 s): wedged. One probe, the rest skipped.
        #expect(!health.isStuck("a", now: at(2800)))
        #expect(health.isStuck("a", now: at(3000)))
        #expect(health.admit("a", now: at(3000)) == .probe)
        #expect(health.admit("a", now: at(3001)) == .skip)
        // The probe succeeds: healthy again.
        health.finished("a", success: true, admission: .probe, now: at(3100))
        #expect(!health.isStuck("a", now: at(3200)))
        #expect(health.admit("a", now: at(3200)) == .call)

        // Every call failing (deadlines included) for more than skipAfter is stuck, even with nothing outstanding.
        #expect(health.admit("b", now: at(0)) == .call)
        health.finished("b", success: false, admission: .call, now: at(0))
        #expect(!health.isStuck("b", now: at(500)))
        #expect(health.isStuck("b", now: at(1500)))

        // A slow comet whose calls take 1.5 s each but succeed is never stuck.
        for step in Int64(0)..<5 {
            #expect(health.admit("slow", now: at(step * 1500)) == .call)
            #expect(!health.isStuck("slow", now: at(step * 1500 + 1400)))
            health.finished("slow", success: true, admission: .call, now: at(step * 1500 + 1500))
        }
    }

    @Test("room messages for a healthy and a hanging comet: the healthy one gets every message at once, the rest finish partially delivered, the room queue never blocks")
    func hangingCometDoesNotBlockTheRoom() async throws {
        let (pool, recorders) = memoryPool(["ok", "stuck"])
        recorders["stuck"]!.setLatency(.seconds(60))  // calls hang (a stopped process, a partition)
        let statistics = JobStatistics()
        // The fake comet has no call deadline: a short "timeout" makes its hanging calls count as wedged quickly.
        let sender = delivery(pool, statistics: statistics, skipAfter: .milliseconds(100), callTimeout: .milliseconds(100))
        let aggregator = RoomAggregator(room: "live://r", batchLimit: 5, queueSize: 10, health: sender.health)
        let sink = TicketLog()
        let messages = (0..<100).map { "m\($0)" }
        let started = ContinuousClock.now
        await withDiscardingTaskGroup { inner in
            // A steady stream, 200 messages a second.
            // (feed throws only when cancelled)
            try? await feed(
                aggregator, messages, targets: ["ok", "stuck"], sink: sink, delivery: sender, statistics: statistics,
                pause: .milliseconds(5), group: &inner)
            // Every message reached the healthy comet while the other hangs.
            #expect(await recorders["ok"]!.wait(timeout: .seconds(10)) { $0.roomMessages("live://r").count == 100 })
            #expect(recorders["ok"]!.roomMessages("live://r") == messages)
            // All but the first hanging batch are finished: partially delivered (the stuck comet skipped).
            let finished = await eventuallyTrue { sink.count >= 95 }
            #expect(finished, "finished \(sink.count)")
            #expect(ContinuousClock.now - started < .seconds(10))
            if case .partiallyDelivered(let detail) = sink.outcome(99) {
                #expect(detail.contains("unreachable: stuck"))
            } else {
                Issue.record("message 99: \(String(describing: sink.outcome(99)))")
            }
            #expect(statistics.skippedCalls.load(ordering: .relaxed) > 0)
            inner.cancelAll()
        }
    }

    @Test("a slow comet (every call succeeds, late) that falls a full room queue behind for skipAfter: the fast comet gets every message without waiting for it; the slow one gets a subsequence in order, the rest counted behind")
    func laggingCometDoesNotHoldTheRoom() async throws {
        let (pool, recorders) = memoryPool(["fast", "slow"])
        recorders["slow"]!.setLatency(.milliseconds(400))  // 5 messages per 400 ms: far below the 200/s fed
        let statistics = JobStatistics()
        let sender = delivery(pool, statistics: statistics, skipAfter: .milliseconds(200), callTimeout: .seconds(5))
        let aggregator = RoomAggregator(room: "live://r", batchLimit: 5, queueSize: 10, health: sender.health)
        let sink = TicketLog()
        let messages = (0..<200).map { "m\($0)" }
        let started = ContinuousClock.now
        await withDiscardingTaskGroup { inner in
            try? await feed(
                aggregator, messages, targets: ["fast", "slow"], sink: sink, delivery: sender, statistics: statistics,
                pause: .milliseconds(5), group: &inner)
            // Waiting on the slow comet would take 200 / 5 × 400 ms = 16 s.
            #expect(await recorders["fast"]!.wait(timeout: .seconds(10)) { $0.roomMessages("live://r").count == 200 })
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(recorders["fast"]!.roomMessages("live://r") == messages)
            #expect(await eventuallyTrue { sink.count == 200 }, "finished \(sink.count)")
            let slow = recorders["slow"]!.roomMessages("live://r")
            let positions = slow.compactMap { messages.firstIndex(of: $0) }
            #expect(positions == positions.sorted() && Set(positions).count == positions.count, "in order, none twice")
            #expect(!slow.isEmpty && slow.count < 200)
            let behind = (0..<200).filter {
                if case .partiallyDelivered(let detail) = sink.outcome(UInt64($0)) { return detail.contains("too far behind on the room: slow") }
                return false
            }
            #expect(behind.count + slow.count == 200, "each message either reached the slow comet or was counted behind")
            #expect(!behind.contains(0), "the first batch went out before the room was full")
            inner.cancelAll()
        }
    }

    @Test("a slow comet that stays within the room queue loses nothing")
    func slowCometWithinTheQueueLosesNothing() async throws {
        let (pool, recorders) = memoryPool(["fast", "slow"])
        recorders["slow"]!.setLatency(.milliseconds(100))
        let statistics = JobStatistics()
        let sender = delivery(pool, statistics: statistics, skipAfter: .milliseconds(50), callTimeout: .seconds(5))
        let aggregator = RoomAggregator(room: "live://r", batchLimit: 5, queueSize: 100, health: sender.health)
        let sink = TicketLog()
        let messages = (0..<40).map { "m\($0)" }
        await withDiscardingTaskGroup { inner in
            try? await feed(
                aggregator, messages, targets: ["fast", "slow"], sink: sink, delivery: sender, statistics: statistics,
                pause: .milliseconds(5), group: &inner)
            #expect(await recorders["slow"]!.wait(timeout: .seconds(10)) { $0.roomMessages("live://r").count == 40 })
            #expect(recorders["slow"]!.roomMessages("live://r") == messages)
            #expect(await eventuallyTrue { sink.count == 40 })
            #expect((0..<40).allSatisfy { sink.outcome(UInt64($0)) == .delivered })
            inner.cancelAll()
        }
    }

    @Test("a call retried against a comet that keeps failing gives up at comet.deliveryDeadline")
    func deliveryDeadline() async throws {
        let (pool, recorders) = memoryPool(["down"])
        recorders["down"]!.setFailing(true)
        let sender = delivery(pool, skipAfter: .seconds(60), deliveryDeadline: .milliseconds(300))
        let started = ContinuousClock.now
        let outcome = await sender.call("down") { try await $0.broadcastRoom(Goim_Comet_BroadcastRoomReq.with { $0.roomID = "r" }) }
        #expect(outcome == .unreachable)
        #expect(ContinuousClock.now - started < .seconds(3))
    }
}

/// Polls `condition` every 10 ms for at most 10 s.
func eventuallyTrue(_ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}
