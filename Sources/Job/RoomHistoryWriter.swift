import Foundation
import GoIMConfig
import GoIMRPC
import History
import Logging
import NATS
import NIOCore
import Synchronization

/// Gives each room message of a room type with history its offset, by writing it to the room's history before any
/// comet sees it. Messages are written in the order this job dispatches them (stream order), one pipeline per
/// fetched batch; a redelivered message gets its first offset again (the queue message id is remembered).
///
/// A failed write does not hold the message back: it goes out without an offset, and the room's next successful
/// write starts a new epoch, so that no client takes the history with a hole in it for complete.
final class RoomHistoryWriter: Sendable {
    let policy: HistorySection
    let store: HistoryStore
    let statistics: JobStatistics
    let logger: Logger
    /// Rooms whose last write failed.
    private let broken = Mutex<Set<String>>([])

    init(policy: HistorySection, store: HistoryStore, statistics: JobStatistics, logger: Logger) {
        self.policy = policy
        self.store = store
        self.statistics = statistics
        self.logger = logger
    }

    /// The stamp of each message that is a ROOM push to a room with history (nil elsewhere), in order.
    func stamp(_ pushes: [(message: JetStreamMessage, push: Goim_Logic_PushMsg)?]) async -> [HistoryStamp?] {
        var requests: [HistoryStore.Append] = []
        var positions: [Int] = []
        var rooms: [String] = []
        let brokenRooms = broken.withLock { $0 }
        for (index, item) in pushes.enumerated() {
            guard let item, item.push.type == .room, let limits = policy.limits(forRoom: item.push.room) else { continue }
            requests.append(HistoryStore.Append(
                stream: .room(item.push.room), messageID: Self.messageID(item.message), operation: item.push.operation,
                body: ByteBuffer(bytes: item.push.msg), limits: limits, newEpoch: brokenRooms.contains(item.push.room)))
            positions.append(index)
            rooms.append(item.push.room)
        }
        var stamps = [HistoryStamp?](repeating: nil, count: pushes.count)
        guard !requests.isEmpty else { return stamps }
        let results = await store.append(requests)
        var failedRooms: Set<String> = []
        var healedRooms: Set<String> = []
        var firstError: HistoryError?
        for (position, (room, result)) in zip(positions, zip(rooms, results)) {
            switch result {
            case .success(let stamp):
                stamps[position] = stamp
                healedRooms.insert(room)
                failedRooms.remove(room)
            case .failure(let error):
                firstError = firstError ?? error
                failedRooms.insert(room)
            }
        }
        let written = stamps.count { $0 != nil }
        statistics.historyWrites.increment(by: written)
        if written < requests.count {
            statistics.historyFailures.increment(by: requests.count - written)
            logger.warning("cannot write room history; sending without offsets, next write starts a new epoch", metadata: [
                "goim.failed": "\(requests.count - written)", "error": "\(firstError.map { "\($0)" } ?? "")",
            ])
        }
        if !failedRooms.isEmpty || !brokenRooms.isEmpty {
            broken.withLock { set in
                set.subtract(healedRooms.subtracting(failedRooms))
                set.formUnion(failedRooms)
            }
        }
        return stamps
    }

    /// The queue message's identity: its stream sequence and store timestamp (unique even if the stream is made
    /// again and its sequences restart).
    static func messageID(_ message: JetStreamMessage) -> String {
        "\(message.streamSequence)-\(message.timestamp)"
    }
}
