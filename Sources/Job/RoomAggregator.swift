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
/// is finished (and acknowledged) once every lane it belongs to has sent it.
///
/// At most `queueSize` messages wait per room: `admit()` suspends the caller (the consumer) while the
/// room is full, so nothing is dropped (goim dropped them: "room proto chan full").
final class RoomAggregator: Sendable {
    struct Entry {
        var packet: ByteBuffer
        var ticket: Ticket
        var targets: Set<String>
        var remaining: Int
        var tally = OutcomeTally()
    }

    struct Lane {
        /// Sequence number of the next entry this lane looks at.
        var next: UInt64
        var running: Bool
    }

    struct State {
        var entries = CircularBuffer<Entry>()
        /// Sequence number of `entries.first`.
        var headSeq: UInt64 = 0
        var lanes: [String: Lane] = [:]
        var retired = false
        var lastActivity = ContinuousClock.now

        var nextSeq: UInt64 { headSeq + UInt64(entries.count) }
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
    }

    let room: String
    let batchLimit: Int
    private let space: AsyncSemaphore
    private let state = Mutex(State())

    init(room: String, batchLimit: Int, queueSize: Int) {
        self.room = room
        self.batchLimit = batchLimit
        self.space = AsyncSemaphore(permits: queueSize)
    }

    /// Waits for room in the queue (back-pressure). Throws only when cancelled.
    func reserve() async throws {
        try await space.acquire()
    }

    /// Queues `packet` (a complete inner packet) for `targets`, after `reserve()`.
    func append(packet: ByteBuffer, ticket: Ticket, targets: [String]) -> AppendResult {
        let result = state.withLock { state -> AppendResult in
            guard !state.retired else { return .retired }
            let seq = state.nextSeq
            state.entries.append(
                Entry(packet: packet, ticket: ticket, targets: Set(targets), remaining: targets.count))
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
        if case .retired = result { space.release() }
        return result
    }

    /// Sends this room's queued messages to comet `hostname`, batch after batch, until none is left
    /// for it. `send` makes the call (with its retries) and reports how it ended.
    func runLane(_ hostname: String, statistics: JobStatistics, send: (Data) async -> CallOutcome) async {
        while let batch = takeBatch(for: hostname) {
            let outcome = await send(batch.body)
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
            var index = Int(max(lane.next, state.headSeq) - state.headSeq)
            while index < state.entries.count && sequences.count < batchLimit {
                let entry = state.entries[state.entries.index(state.entries.startIndex, offsetBy: index)]
                if entry.targets.contains(hostname) {
                    sequences.append(state.headSeq + UInt64(index))
                    size += entry.packet.readableBytes
                }
                index += 1
            }
            lane.next = state.headSeq + UInt64(index)
            guard !sequences.isEmpty else {
                lane.running = false
                state.lanes[hostname] = lane
                return nil
            }
            state.lanes[hostname] = lane
            var body = Data(capacity: size)
            for seq in sequences {
                let entry = state.entries[state.entries.index(state.entries.startIndex, offsetBy: Int(seq - state.headSeq))]
                body.append(contentsOf: entry.packet.readableBytesView)
            }
            return Batch(sequences: sequences, body: body)
        }
    }

    /// Records one lane's outcome for `sequences`; returns the entries now finished, in order.
    private func complete(_ sequences: [UInt64], hostname: String, outcome: CallOutcome) -> [(Ticket, DeliveryOutcome)] {
        state.withLock { state in
            for seq in sequences {
                let index = state.entries.index(state.entries.startIndex, offsetBy: Int(seq - state.headSeq))
                state.entries[index].remaining -= 1
                state.entries[index].tally.add(outcome, comet: hostname)
            }
            var finished: [(Ticket, DeliveryOutcome)] = []
            while let first = state.entries.first, first.remaining == 0 {
                state.entries.removeFirst()
                state.headSeq += 1
                finished.append((first.ticket, first.tally.outcome))
            }
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

    init(batchLimit: Int, queueSize: Int, idle: Duration) {
        self.batchLimit = batchLimit
        self.queueSize = queueSize
        self.idle = idle
    }

    /// The live aggregator of `room`, created when missing or retired.
    mutating func aggregator(for room: String) -> RoomAggregator {
        if let existing = rooms[room] { return existing }
        let created = RoomAggregator(room: room, batchLimit: batchLimit, queueSize: queueSize)
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
