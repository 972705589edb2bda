import GoIMProtocol
import NIOCore
import Testing

@testable import Comet

/// The per-room order of messages with offsets (docs/history.md "Order on the comet").
struct RoomSequencerTests {
    static func packets(_ offsets: [UInt64]) -> (ByteBuffer, [OffsetPackets.Item]) {
        var body = ByteBuffer()
        for offset in offsets {
            OffsetPackets.append(offset: offset, operation: 1000, body: Array("m\(offset)".utf8), to: &body)
        }
        return (body, OffsetPackets.split(body)!)
    }

    /// Feeds `offsets` as one call; returns the offsets passed on, per run, and whether a gap fill was asked for.
    static func feed(_ sequencer: RoomSequencer, _ offsets: [UInt64], epoch: String = "e1") -> (runs: [[UInt64]], fill: Bool) {
        let (body, items) = packets(offsets)
        var runs: [[UInt64]] = []
        let fill = sequencer.accept(epoch: epoch, body: body, packets: items) { run in
            runs.append(OffsetPackets.split(run.body)!.map(\.offset))
            #expect(run.first == runs.last!.first! && run.last == runs.last!.last!)
        }
        return (runs, fill)
    }

    @Test func inOrderCallsPassStraightThroughAsOneRun() {
        let sequencer = RoomSequencer(maxHeld: 100, counters: Counters())
        #expect(Self.feed(sequencer, [5, 6, 7]).runs == [[5, 6, 7]])
        #expect(Self.feed(sequencer, [8]).runs == [[8]])
    }

    @Test func aMessageAheadOfAMissingOneWaitsForIt() {
        let counters = Counters()
        let sequencer = RoomSequencer(maxHeld: 100, counters: counters)
        #expect(Self.feed(sequencer, [1, 2]).runs == [[1, 2]])
        let ahead = Self.feed(sequencer, [4, 5])
        #expect(ahead.runs.isEmpty && ahead.fill)
        // The missing one arrives (another job was slower): everything goes out in order, in one run.
        let filled = Self.feed(sequencer, [3])
        #expect(filled.runs == [[3, 4, 5]] && !filled.fill)
        // Duplicates (a redelivery) are dropped.
        #expect(Self.feed(sequencer, [2, 3, 6]).runs == [[6]])
        #expect(counters.offsetDuplicates.load(ordering: .relaxed) == 2)
        #expect(sequencer.gap(after: .zero) == .none)
    }

    @Test func aGapIsFilledFromHistoryOrSkipped() {
        let counters = Counters()
        let sequencer = RoomSequencer(maxHeld: 100, counters: counters)
        _ = Self.feed(sequencer, [1])
        #expect(Self.feed(sequencer, [5, 6]).fill)
        // A young gap waits (another job may still deliver 2...4); an old one is read from history.
        guard case .wait = sequencer.gap(after: .seconds(60)) else {
            Issue.record("a fresh gap should wait")
            return
        }
        #expect(sequencer.gap(after: .zero) == .fill(epoch: "e1", since: 1, before: 5))
        // History had 2 and 3 but no longer 4 (trimmed): 4 is skipped, the rest goes out in order.
        var runs: [[UInt64]] = []
        let again = sequencer.fill(epoch: "e1", since: 1, before: 5, found: Self.packets([2, 3]).1) { run in
            runs.append(OffsetPackets.split(run.body)!.map(\.offset))
        }
        #expect(runs == [[2, 3, 5, 6]] && !again)
        #expect(counters.offsetsSkipped.load(ordering: .relaxed) == 1)
        #expect(Self.feed(sequencer, [7]).runs == [[7]])
    }

    @Test func tooMuchHeldGivesUpOnTheGapAtOnce() {
        let counters = Counters()
        let sequencer = RoomSequencer(maxHeld: 2, counters: counters)
        _ = Self.feed(sequencer, [1])
        #expect(Self.feed(sequencer, [3, 4]).runs.isEmpty)
        #expect(Self.feed(sequencer, [5]).runs == [[3, 4, 5]])
        #expect(counters.offsetsSkipped.load(ordering: .relaxed) == 1)
    }

    @Test func aNewEpochStartsOver() {
        let sequencer = RoomSequencer(maxHeld: 100, counters: Counters())
        _ = Self.feed(sequencer, [10, 11])
        _ = Self.feed(sequencer, [13])  // held, waiting for 12
        // History was lost and offsets start again at 1: the held message goes out first, then the new epoch's.
        let fresh = Self.feed(sequencer, [1, 2], epoch: "e2")
        #expect(fresh.runs == [[13], [1, 2]])
    }

    @Test func aRecoveringClientSetsWhereAFreshRoomStarts() {
        let sequencer = RoomSequencer(maxHeld: 100, counters: Counters())
        sequencer.start(epoch: "e1", after: 40)
        // 41 went to no comet of this room (it had no members here); 42 arrives first: it waits for 41.
        #expect(Self.feed(sequencer, [42]).runs.isEmpty)
        #expect(Self.feed(sequencer, [41]).runs == [[41, 42]])
        // Once the room has started, a later recovery does not move it.
        sequencer.start(epoch: "e1", after: 100)
        #expect(Self.feed(sequencer, [43]).runs == [[43]])
    }

    @Test func goimClientsGetSeqZeroAndRecoveredClientsSkipWhatTheyHave() {
        let (body, _) = Self.packets([7, 8, 9])
        let push = StreamPush(run: OffsetRun(epoch: "e", first: 7, last: 9, body: body))
        #expect(sequences(push.plain.tcp) == [0, 0, 0])
        #expect(sequences(push.withOffsets.tcp) == [7, 8, 9])
        #expect(push.after(9) == nil)
        #expect(push.after(6).map { sequences($0.tcp) } == [7, 8, 9])
        #expect(push.after(7).map { sequences($0.tcp) } == [8, 9])
        // The WebSocket form is one binary frame holding an op 9 packet with ver 1, seq 0.
        let frame = push.plain.webSocket
        #expect(frame.getInteger(at: frame.readerIndex, as: UInt8.self) == 0x82)
    }

    func sequences(_ body: ByteBuffer) -> [Int32] {
        (try? RawBatch.split(body))?.map(\.sequence) ?? []
    }
}
