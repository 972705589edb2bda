import GoIMProtocol
import NIOCore
import Synchronization

/// Consecutive messages of one room's history: complete inner packets back to back, each `seq` its offset.
struct OffsetRun: Sendable {
    var epoch: String
    var first: UInt64
    var last: UInt64
    var body: ByteBuffer
}

/// Puts one room's messages with offsets back in offset order before they reach the event loops.
///
/// Job writes a message to history (which gives it its offset) before any comet sees it, but two jobs, or a job and
/// a redelivery, may hand a comet offsets 7 and 6 in that order. The sequencer passes on each offset once, in order:
/// a message ahead of a missing one is held (at most `maxHeld`), and after `comet.history.gapWait` the comet reads the
/// missing ones from history (`Comet.fillGap`) or, when history no longer has them, skips them (counted). A message
/// at an offset already passed on is a duplicate and is dropped. A new epoch (history lost) starts over.
///
/// `emit` runs under the lock, so runs reach the event loops' queues in offset order even when two calls for the
/// same room arrive at once; it only enqueues.
final class RoomSequencer: Sendable {
    struct State {
        var epoch = ""
        /// The next offset to pass on; nil until the first message (or a recovering client) sets it.
        var next: UInt64?
        var held: [UInt64: ByteBuffer] = [:]
        var gapFillScheduled = false
        /// Since when the offset `next` has been missing (messages after it are held).
        var gapSince: ContinuousClock.Instant?
    }

    enum Gap: Equatable {
        /// Nothing is held: the scheduled fill ends.
        case none
        /// The current gap is younger than the wait: look again after this long.
        case wait(Duration)
        /// Read offsets `since + 1 ..< before` of `epoch` from history.
        case fill(epoch: String, since: UInt64, before: UInt64)
    }

    let maxHeld: Int
    private let state = Mutex(State())
    let counters: Counters

    init(maxHeld: Int, counters: Counters) {
        self.maxHeld = maxHeld
        self.counters = counters
    }

    /// Takes the packets of one `BroadcastRoom` call (`body` is all of them). Returns true when a gap fill must be
    /// scheduled (messages are held and none is scheduled yet).
    func accept(epoch: String, body: ByteBuffer, packets: [OffsetPackets.Item], emit: (OffsetRun) -> Void) -> Bool {
        guard let firstOffset = packets.first?.offset else { return false }
        return state.withLock { s in
            if s.epoch != epoch {
                // History was lost and started again: what is held belongs to the old epoch; pass it on as it is.
                if !s.held.isEmpty { emit(Self.runOfHeld(&s)) }
                s = State(epoch: epoch, next: nil, held: [:], gapFillScheduled: s.gapFillScheduled, gapSince: nil)
            }
            let next = s.next ?? firstOffset
            // The common case (one job, nothing held): the call's packets are exactly the next offsets.
            if s.held.isEmpty, firstOffset == next, Self.isContiguous(packets) {
                s.next = packets[packets.count - 1].offset + 1
                emit(OffsetRun(epoch: epoch, first: firstOffset, last: s.next! - 1, body: body))
                return false
            }
            s.next = next
            var run = RunBuilder(epoch: epoch)
            for packet in packets {
                if packet.offset < s.next! {
                    counters.increment(\.offsetDuplicates)
                } else if packet.offset == s.next! {
                    run.append(packet.offset, packet.bytes)
                    s.next! += 1
                    Self.drain(&s, into: &run)
                } else if s.held.updateValue(packet.bytes, forKey: packet.offset) != nil {
                    counters.increment(\.offsetDuplicates)
                } else {
                    counters.increment(\.offsetsHeld)
                }
            }
            if s.held.count > maxHeld {
                // Too much waits behind the gap: give up on it now.
                skipGap(&s, into: &run)
            }
            if let built = run.build() { emit(built) }
            if s.held.isEmpty {
                s.gapSince = nil
            } else if run.build() != nil || s.gapSince == nil {
                // A new gap (the old one, if any, closed in this call).
                s.gapSince = .now
            }
            guard !s.held.isEmpty, !s.gapFillScheduled else { return false }
            s.gapFillScheduled = true
            return true
        }
    }

    /// What the scheduled fill must do now: a gap is read from history once it has lasted `wait`.
    func gap(after wait: Duration, now: ContinuousClock.Instant = .now) -> Gap {
        state.withLock { s in
            guard let next = s.next, let low = s.held.keys.min(), low > next else {
                s.gapFillScheduled = false
                s.gapSince = nil
                return .none
            }
            let since = s.gapSince ?? now
            if now - since < wait { return .wait(wait - (now - since)) }
            return .fill(epoch: s.epoch, since: next - 1, before: low)
        }
    }

    /// Fills the gap `gap()` named with `found` (read from history; possibly not all of it), skips what is still
    /// missing in it, and passes on what is now in order. Returns true when another gap remains (fill again).
    func fill(epoch: String, since: UInt64, before: UInt64, found: [OffsetPackets.Item], emit: (OffsetRun) -> Void) -> Bool {
        state.withLock { s in
            var run = RunBuilder(epoch: s.epoch)
            if s.epoch == epoch, s.next == since + 1 {
                for item in found where item.offset > since && item.offset < before && s.held[item.offset] == nil {
                    s.held[item.offset] = item.bytes
                }
                Self.drain(&s, into: &run)
                if let next = s.next, next < before { skipGap(&s, into: &run) }
            }
            if let built = run.build() { emit(built) }
            let another = !s.held.isEmpty
            s.gapFillScheduled = another
            s.gapSince = another ? .now : nil
            return another
        }
    }

    /// A recovering client read history up to `top` of `epoch`: if this comet has not passed on any offset of that
    /// epoch yet, the next one it passes on is `top + 1` (so that a message the client's read did not see, but that
    /// went to no comet of this room before it joined, is not missed: the gap is filled from history).
    func start(epoch: String, after top: UInt64) {
        state.withLock { s in
            guard s.next == nil || s.epoch != epoch, s.held.isEmpty else { return }
            s.epoch = epoch
            s.next = top + 1
        }
    }

    // MARK: helpers (under the lock)

    /// Skips the missing offsets before the lowest held one, then drains.
    private func skipGap(_ s: inout State, into run: inout RunBuilder) {
        guard let next = s.next, let low = s.held.keys.min(), low > next else { return }
        counters.offsetsSkipped.wrappingIncrement(by: Int(low - next), ordering: .relaxed)
        s.next = low
        Self.drain(&s, into: &run)
    }

    private static func drain(_ s: inout State, into run: inout RunBuilder) {
        while let next = s.next, let bytes = s.held.removeValue(forKey: next) {
            run.append(next, bytes)
            s.next = next + 1
        }
    }

    private static func runOfHeld(_ s: inout State) -> OffsetRun {
        var run = RunBuilder(epoch: s.epoch)
        for offset in s.held.keys.sorted() { run.append(offset, s.held[offset]!) }
        s.held = [:]
        return run.build()!
    }

    private static func isContiguous(_ packets: [OffsetPackets.Item]) -> Bool {
        var expected = packets[0].offset
        for packet in packets {
            guard packet.offset == expected else { return false }
            expected += 1
        }
        return true
    }
}

/// Collects packets into one `OffsetRun`.
struct RunBuilder {
    let epoch: String
    var first: UInt64 = 0
    var last: UInt64 = 0
    var body = ByteBuffer()

    init(epoch: String) {
        self.epoch = epoch
    }

    mutating func append(_ offset: UInt64, _ bytes: ByteBuffer) {
        if body.readableBytes == 0 { first = offset }
        last = offset
        body.writeImmutableBuffer(bytes)
    }

    func build() -> OffsetRun? {
        body.readableBytes == 0 ? nil : OffsetRun(epoch: epoch, first: first, last: last, body: body)
    }
}
