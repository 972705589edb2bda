import Foundation
import StackHarness
import Synchronization

/// Sends numbered pushes (body `f<id>`) through logic's HTTP API at a steady rate, a mix of room, mids and broadcast
/// pushes, and records which ones logic acknowledged (code 0). A push that is not acknowledged (logic down, NATS
/// down, HTTP 5xx) is retried every 100 ms with the same `Idempotency-Key`, on the next logic in turn, for up to
/// `retryFor`: what a careful push caller does.
final class Pusher: Sendable {
    struct Record: Sendable {
        let id: Int
        let target: PushTarget
        /// The clients it addresses.
        let recipients: [Int]
        /// The first attempt.
        let sentAt: ContinuousClock.Instant
        var ackedAt: ContinuousClock.Instant?
        var attempts = 0
        var lastError = ""
        /// When its first failed attempt began and its last failed attempt ended (refused, failed or timed out):
        /// what the error window of a fault is made of.
        var failedSince: ContinuousClock.Instant?
        var failedUntil: ContinuousClock.Instant?
    }

    let records = Mutex<[Int: Record]>([:])
    private let run = UUID().uuidString.prefix(8)
    let retryFor: Duration

    init(retryFor: Duration = .seconds(30)) {
        self.retryFor = retryFor
    }

    /// The push with id `id`: one in ten a broadcast, three in ten to two members, the rest to a room.
    static func target(_ id: Int, fleet: CheckedFleet) -> PushTarget {
        switch id % 10 {
        case 0: return .all
        case 1, 4, 7:
            let count = fleet.clients.count
            let first = fleet.clients[(id * 7) % count].mid
            let second = fleet.clients[(id * 13 + 1) % count].mid
            return .mids(first == second ? [first] : [first, second])
        default: return .room(fleet.rooms[id % fleet.rooms.count])
        }
    }

    /// Sends `count` pushes at `rate` per second (each on its own task, so a slow or failing push does not hold
    /// back the next) and returns when every one is acknowledged or given up.
    func send(count: Int, rate: Double, stack: Stack, fleet: CheckedFleet) async {
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for id in 0..<count {
                let due = start + .milliseconds(Int64(Double(id) * 1000 / rate))
                try? await Task.sleep(until: due)
                let target = Self.target(id, fleet: fleet)
                records.withLock {
                    $0[id] = Record(id: id, target: target, recipients: fleet.recipients(of: target), sentAt: .now)
                }
                group.addTask { await self.push(id, target: target, stack: stack) }
            }
        }
    }

    private func push(_ id: Int, target: PushTarget, stack: Stack) async {
        let giveUp = ContinuousClock.now + retryFor
        var attempt = 0
        while ContinuousClock.now < giveUp {
            let logic = (id + attempt) % stack.logics.count
            attempt += 1
            let attemptStart = ContinuousClock.now
            var error = ""
            do {
                let reply = try await stack.tryPush(target.uri, "f\(id)", idempotencyKey: "fault-\(run)-\(id)", logic: logic)
                if reply.status == 200, reply.code == 0 {
                    records.withLock {
                        $0[id]?.ackedAt = .now
                        $0[id]?.attempts = attempt
                    }
                    return
                }
                error = "HTTP \(reply.status) \(reply.body.prefix(120))"
            } catch let failure {
                error = "\(failure)".prefix(120).description
            }
            records.withLock { records in
                guard var record = records[id] else { return }
                record.attempts = attempt
                record.lastError = error
                record.failedSince = record.failedSince ?? attemptStart
                record.failedUntil = .now
                records[id] = record
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    var all: [Record] { records.withLock { $0.values.sorted { $0.id < $1.id } } }
}
