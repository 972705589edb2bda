import Foundation
import GoIMConfig
import GoIMRPC
import Synchronization
import TestSupport
import Testing

@testable import Job

/// Room-push throughput from NATS to comet RPCs. Not part of the normal run:
/// `JOB_BENCH=1 swift test --filter JobThroughput` (see docs/job.md for the figures and the exact command).
@Suite("Job throughput", .serialized, .enabled(if: ProcessInfo.processInfo.environment["JOB_BENCH"] != nil))
struct JobThroughput {
    static let messages = Int(ProcessInfo.processInfo.environment["JOB_BENCH_MESSAGES"] ?? "") ?? 20_000
    static let rooms = Int(ProcessInfo.processInfo.environment["JOB_BENCH_ROOMS"] ?? "") ?? 10

    /// Publishes the backlog, starts a job, and times it until every message was delivered.
    func run(
        _ name: String, comets: Int, roomsPerComet: Bool = false, configure: (inout JobConfiguration) -> Void
    ) async throws {
        let harness = try await JobHarness.start(configure)
        defer { Task { await harness.stop() } }
        var fakes: [FakeCometServer] = []
        for index in 0..<comets { fakes.append(try await harness.addComet("comet-\(index)")) }
        if roomsPerComet {
            for (index, fake) in fakes.enumerated() {
                fake.recorder.setRooms(Set((0..<Self.rooms).filter { $0 % comets == index }.map { "live://\($0)" }))
            }
        }
        let count = Self.messages
        let payload = String(repeating: "x", count: 32)
        // Publish concurrently: the backlog is there before the job starts.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<16 {
                group.addTask {
                    for index in stride(from: worker, to: count, by: 16) {
                        try await harness.publishRoom("live://\(index % Self.rooms)", "\(index)-\(payload)")
                    }
                }
            }
            try await group.waitForAll()
        }
        let job = try await harness.makeJob()
        var elapsed = Duration.zero
        try await harness.withRunning(job) {
            let start = ContinuousClock.now
            #expect(await eventually(timeout: .seconds(300)) { job.statistics.delivered.load(ordering: .relaxed) == count })
            elapsed = ContinuousClock.now - start
        }
        let stats = job.statistics.snapshot
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let calls = fakes.map { $0.recorder.calls(.broadcastRoom).count }.reduce(0, +)
        print(
            "THROUGHPUT \(name): \(count) room messages, \(Self.rooms) rooms, \(comets) comet(s): "
                + String(format: "%.2f s, %.0f messages/s, %d BroadcastRoom calls, mean batch %.1f", seconds,
                    Double(count) / seconds, calls, Double(stats.roomBatchedMessages) / Double(max(1, stats.roomBatches))))
    }

    @Test("batching on (room.batch = 20), 1 comet")
    func batchingOn() async throws {
        try await run("batching on", comets: 1) { $0.room.batch = 20 }
    }

    @Test("batching off (room.batch = 1), 1 comet")
    func batchingOff() async throws {
        try await run("batching off", comets: 1) { $0.room.batch = 1 }
    }

    @Test("4 comets, each room on one comet: room.targets = all")
    func targetsAll() async throws {
        try await run("targets=all, 4 comets", comets: 4, roomsPerComet: true) { $0.room.batch = 20 }
    }

    @Test("4 comets, each room on one comet: room.targets = rooms")
    func targetsRooms() async throws {
        try await run("targets=rooms, 4 comets", comets: 4, roomsPerComet: true) {
            $0.room.batch = 20
            $0.room.targets = "rooms"
        }
    }
}
