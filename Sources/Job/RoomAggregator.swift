import Foundation
import GoIMRPC
import NIOCore
import Primitives
import Synchronization

/// Where a message's final outcome goes (the consumer acknowledges it there).
protocol TicketSink: Sendable {
    func finish(_ id: UInt64, _ outcome: DeliveryOutcome)
}

/// One queue message being delivered: finishing it exactly once settles the message.
struct Ticket: Sendable {
    let id: UInt64
    let sink: any TicketSink

    func finish(_ outcome: DeliveryOutcome) { sink.finish(id, outcome) }
}

/// The messages of one room on their way to the comets.
///
/// Unlike goim's aggregator (which holds every batch for `room.signal`), a message goes out at once
/// when the room is quiet; batches form only from what arrives while the room's previous call to a
/// comet is still in flight. Each target comet has its own lane: at most one `BroadcastRoom` per room
/// and comet is in flight (which keeps the room's order on that comet), carrying up to `batch` queued
/// messages in their arrival order. A slow or unreachable comet delays only its own lane; a message
/// is finished (and acknowledged) once every lane it belongs to has sent it (or given up on its comet),
/// in whatever order that happens: a batch stuck on one comet does not hold back the messages after it.
///
/// At most `queueSize` unfinished messages wait per room: `reserve()` suspends the caller (the consumer)
/// while the room is full (goim dropped them: "room proto chan full"). The consumer's dispatch loop waits there for
/// every room and comet, so a full room must not stay full because of one comet: while it is full, `reserve()` gives
/// up on the queued messages of stuck comets at once, and, once the room has been full for `comet.skipAfter`, on the
/// messages that only a lagging comet still has to take (every other comet is done with them). A comet that keeps up
/// loses nothing; one that falls that far behind a room loses those messages (counted partially delivered; with room
/// history its comet reads the gap back from history).
final class RoomAggregator: Sendable {
    struct Entry {
        var packet: ByteBuffer
        /// The room history's epoch when the packet carries its offset; empty otherwise. One call carries one epoch.
        var epoch: String
        var ticket: Ticket
        var targets: Set<String>
        var remaining: Int
        var tally = OutcomeTally()
        /// Finished (every lane is done with it) but still in `entries` behind an unfinished one.
        var done = false
    }

    struct Lane {
        /// Sequence number of the next entry this lane looks at.
        var next: UInt64
        var running: Bool
        /// Messages were given up for it as `behind`; until it catches up (takes all that is queued for it), a full room
        /// gives up on its behind messages at once rather than after `comet.skipAfter` again.
        var lagging = false
    }

    struct State {
        var entries = CircularBuffer<Entry>()
        /// Sequence number of `entries.first`.
        var headSeq: UInt64 = 0
        var lanes: [String: Lane] = [:]
        var retired = false
        var lastActivity = ContinuousClock.now

        var nextSeq: UInt64 { headSeq + UInt64(entries.count) }

        /// Comet `hostname` is done with the entry at `offset` from the head (sent, or given up); returns the entry's
        /// ticket and outcome when that was its last comet.
        mutating func laneDone(at offset: Int, hostname: String, outcome: CallOutcome) -> (Ticket, DeliveryOutcome)? {
            let index = entries.index(entries.startIndex, offsetBy: offset)
            entries[index].remaining -= 1
            entries[index].tally.add(outcome, comet: hostname)
            guard entries[index].remaining == 0 else { return nil }
            entries[index].done = true
            return (entries[index].ticket, entries[index].tally.outcome)
        }

        /// Drops finished entries from the head (one behind an unfinished entry waits its turn).
        mutating func dropFinishedHead() {
            while let first = entries.first, first.done {
                entries.removeFirst()
                headSeq += 1
            }
        }
    }

    enum AppendResult {
        /// Queued; the lanes named must be started (they were idle).
        case appended(startLanes: [String])
        /// This aggregator was retired as idle: use a new one.
        case retired
    }

    /// One batch taken by a lane.
    struct Batch {
        var sequences: [UInt64]
        var body: Data
        var epoch: String
    }

    let room: String
    let batchLimit: Int
    /// Comets that stopped making progress get no new messages, and a full queue gives up on their queued ones.
    let health: CometHealth?
    private let space: AsyncSemaphore
    private let state = Mutex(State())

    init(room: String, batchLimit: Int, queueSize: Int, health: CometHealth? = nil) {
        self.room = room
        self.batchLimit = batchLimit
        self.health = health
        self.space = AsyncSemaphore(permits: queueSize)
    }

    /// Waits for room in the queue (back-pressure). Throws only when cancelled.
    ///
    /// While the queue is full, every `skipAfter / 2` it gives up on the queued messages of comets that are stuck: a
    /// lane whose call hangs (a partitioned comet) would otherwise hold the room until that call's deadline. This
    /// timer runs only while a room is full; a room with space takes a permit at once.
    func reserve() async throws {
        guard let health, space.tryAcquire(upTo: 1) == 0 else {
            if health == nil { try await space.acquire() }
            return
        }
        // Full: a comet already known to lag gives up its behind messages now.
        skipLanes(laggingOnly: true)
        if space.tryAcquire(upTo: 1) == 1 { return }
        let interval = max(.milliseconds(10), health.skipAfter / 2)
        let fullSince = ContinuousClock.now
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.space.acquire()
                return true
            }
            group.addTask {
                while (try? await Task.sleep(for: interval)) != nil {
                    self.skipLanes(fullFor: .now - fullSince)
                }
                return false
            }
            for try await acquired in group where acquired {
                group.cancelAll()
                return
            }
        }
    }

    /// While the room is full: gives up on every queued message of a stuck comet that its lane has not taken yet
    /// (counted unreachable there), and, once the room has been full for `comet.skipAfter` (`fullFor`), on each queued
    /// message that only one comet has still to take, its lane not having taken it yet, while the message's other
    /// comets are done with it (counted `behind` there). A message is finished if that was its last comet.
    /// - Parameter laggingOnly: only the behind messages of lanes that lag already (nothing for stuck comets).
    func skipLanes(fullFor: Duration = .zero, laggingOnly: Bool = false) {
        guard let health else { return }
        let lagging = fullFor >= health.skipAfter
        var skippedCount = 0
        let finished = state.withLock { state -> [(Ticket, DeliveryOutcome)] in
            var finished: [(Ticket, DeliveryOutcome)] = []
            for (hostname, lane) in state.lanes where lane.running {
                let stuck = !laggingOnly && health.isStuck(hostname)
                guard stuck || (laggingOnly ? lane.lagging : lagging || lane.lagging) else { continue }
                var index = Int(max(lane.next, state.headSeq) - state.headSeq)
                while index < state.entries.count {
                    let position = state.entries.index(state.entries.startIndex, offsetBy: index)
                    let entry = state.entries[position]
                    let behind = !stuck && entry.remaining == 1 && entry.tally.count > 0
                    if (stuck || behind) && state.entries[position].targets.remove(hostname) != nil {
                        skippedCount += 1
                        if behind { state.lanes[hostname]?.lagging = true }
                        let outcome: CallOutcome = stuck ? .unreachable : .behind
                        if let done = state.laneDone(at: index, hostname: hostname, outcome: outcome) { finished.append(done) }
                    }
                    index += 1
                }
            }
            state.dropFinishedHead()
            return finished
        }
        for (ticket, outcome) in finished { ticket.finish(outcome) }
        if !finished.isEmpty { space.release(finished.count) }
        if skippedCount > 0 { health.recordSkipped(skippedCount) }
    }

    /// Queues `packet` (a complete inner packet) for `targets`, after `reserve()`. A stuck target is counted
    /// unreachable at once instead of being queued.
    func append(packet: ByteBuffer, epoch: String = "", ticket: Ticket, targets: [String]) -> AppendResult {
        var targets = targets
        var skipped: [String] = []
        if let health {
            skipped = targets.filter { health.isStuck($0) }
            if !skipped.isEmpty { targets.removeAll { skipped.contains($0) } }
        }
        if targets.isEmpty {
            // Every target is stuck: nothing to queue.
            let retired = state.withLock { $0.retired }
            space.release()
            if retired { return .retired }
            var tally = OutcomeTally()
            for hostname in skipped { tally.add(.unreachable, comet: hostname) }
            health?.recordSkipped(skipped.count)
            ticket.finish(tally.outcome)
            return .appended(startLanes: [])
        }
        let result = state.withLock { state -> AppendResult in
            guard !state.retired else { return .retired }
            let seq = state.nextSeq
            var entry = Entry(packet: packet, epoch: epoch, ticket: ticket, targets: Set(targets), remaining: targets.count)
            for hostname in skipped { entry.tally.add(.unreachable, comet: hostname) }
            state.entries.append(entry)
            state.lastActivity = .now
            var start: [String] = []
            for target in targets {
                var lane = state.lanes[target] ?? Lane(next: seq, running: false)
                if !lane.running {
                    lane.running = true
                    start.append(target)
                }
                state.lanes[target] = lane
            }
            return .appended(startLanes: start)
        }
        if case .retired = result {
            space.release()
        } else if !skipped.isEmpty {
            health?.recordSkipped(skipped.count)
        }
        return result
    }

    /// Sends this room's queued messages to comet `hostname`, batch after batch, until none is left
    /// for it. `send` makes the call (with its retries) and reports how it ended.
    func runLane(_ hostname: String, statistics: JobStatistics, send: (_ body: Data, _ epoch: String) async -> CallOutcome) async {
        while let batch = takeBatch(for: hostname) {
            let outcome = await send(batch.body, batch.epoch)
            if outcome == .delivered {
                statistics.roomBatches.increment()
                statistics.roomBatchedMessages.increment(by: batch.sequences.count)
            }
            let finished = complete(batch.sequences, hostname: hostname, outcome: outcome)
            for (ticket, outcome) in finished { ticket.finish(outcome) }
            space.release(finished.count)
        }
    }

    private func takeBatch(for hostname: String) -> Batch? {
        state.withLock { state -> Batch? in
            guard var lane = state.lanes[hostname] else { return nil }
            var sequences: [UInt64] = []
            var size = 0
            var epoch: String?
            var index = Int(max(lane.next, state.headSeq) - state.headSeq)
            while index < state.entries.count && sequences.count < batchLimit {
                let entry = state.entries[state.entries.index(state.entries.startIndex, offsetBy: index)]
                if entry.targets.contains(hostname) {
                    // A history epoch change ends the batch: one call carries one epoch.
                    if let epoch, epoch != entry.epoch { break }
                    epoch = entry.epoch
                    sequences.append(state.headSeq + UInt64(index))
                    size += entry.packet.readableBytes
                }
                index += 1
            }
            lane.next = state.headSeq + UInt64(index)
            guard !sequences.isEmpty else {
                lane.running = false
                lane.lagging = false
                state.lanes[hostname] = lane
                return nil
            }
            state.lanes[hostname] = lane
            var body = Data(capacity: size)
            for seq in sequences {
                let entry = state.entries[state.entries.index(state.entries.startIndex, offsetBy: Int(seq - state.headSeq))]
                body.append(contentsOf: entry.packet.readableBytesView)
            }
            return Batch(sequences: sequences, body: body, epoch: epoch ?? "")
        }
    }

    /// Records one lane's outcome for `sequences`; returns the entries now finished. Finished entries leave the
    /// queue from its head; one behind an unfinished entry is finished at once and leaves later.
    private func complete(_ sequences: [UInt64], hostname: String, outcome: CallOutcome) -> [(Ticket, DeliveryOutcome)] {
        state.withLock { state in
            var finished: [(Ticket, DeliveryOutcome)] = []
            for seq in sequences {
                if let done = state.laneDone(at: Int(seq - state.headSeq), hostname: hostname, outcome: outcome) { finished.append(done) }
            }
            state.dropFinishedHead()
            state.lastActivity = .now
            return finished
        }
    }

    /// Marks the aggregator retired when nothing is queued or being sent and nothing happened for
    /// `idle`; a retired aggregator refuses `append` (goim bug 22: messages handed to an aggregator
    /// that had decided to exit were lost).
    func retireIfIdle(idle: Duration, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            guard !state.retired else { return true }
            guard state.entries.isEmpty, !state.lanes.values.contains(where: \.running),
                now - state.lastActivity >= idle
            else { return false }
            state.retired = true
            return true
        }
    }

    /// Messages queued or being sent.
    var pending: Int { state.withLock { $0.entries.count } }
}

/// The room aggregators of one consumer, keyed by room. Only the consumer's dispatch loop uses it.
struct RoomTable {
    let batchLimit: Int
    let queueSize: Int
    let idle: Duration
    private(set) var rooms: [String: RoomAggregator] = [:]
    private var lastSweep = ContinuousClock.now

    let health: CometHealth?

    init(batchLimit: Int, queueSize: Int, idle: Duration, health: CometHealth? = nil) {
        self.batchLimit = batchLimit
        self.queueSize = queueSize
        self.idle = idle
        self.health = health
    }

    /// The live aggregator of `room`, created when missing or retired.
    mutating func aggregator(for room: String) -> RoomAggregator {
        if let existing = rooms[room] { return existing }
        let created = RoomAggregator(room: room, batchLimit: batchLimit, queueSize: queueSize, health: health)
        rooms[room] = created
        return created
    }

    /// Drops `aggregator` if it is still the one registered for its room.
    mutating func remove(_ aggregator: RoomAggregator) {
        if rooms[aggregator.room] === aggregator { rooms[aggregator.room] = nil }
    }

    /// Retires and drops idle aggregators, at most every `idle / 2`.
    mutating func sweepIfDue(now: ContinuousClock.Instant = .now) {
        guard now - lastSweep >= idle / 2 else { return }
        lastSweep = now
        for (room, aggregator) in rooms where aggregator.retireIfIdle(idle: idle, now: now) {
            rooms[room] = nil
        }
    }
}
