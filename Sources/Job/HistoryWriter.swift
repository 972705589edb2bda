import Foundation
import GoIMConfig
import GoIMRPC
import History
import Logging
import NATS
import NIOCore
import Synchronization

/// Gives each message of a stream with history its offset, by writing it to the stream's history before any comet
/// sees it: a ROOM push to a room type with history, and a push to users (`PushMsg.mids`, `history.mids`) once per
/// user. Messages are written in the order this job dispatches them (stream order), one pipeline per fetched batch;
/// a redelivered message gets its first offset again (the queue message id is remembered).
///
/// A failed write does not hold the message back: it goes out without an offset, and the stream's next successful
/// write starts a new epoch, so that no client takes the history with a hole in it for complete.
final class HistoryWriter: Sendable {
    /// Where one queue message landed: its room's stamp, or one per user of `mids` (nil where not written).
    struct Stamps: Sendable {
        var room: HistoryStamp?
        var users: [HistoryStamp?] = []
    }

    let policy: HistorySection
    let store: HistoryStore
    let statistics: JobStatistics
    let logger: Logger
    /// Streams whose last write failed.
    private let broken = Mutex<Set<HistoryStream>>([])

    init(policy: HistorySection, store: HistoryStore, statistics: JobStatistics, logger: Logger) {
        self.policy = policy
        self.store = store
        self.statistics = statistics
        self.logger = logger
    }

    /// The stamps of each message, in order.
    func stamp(_ pushes: [(message: JetStreamMessage, push: Goim_Logic_PushMsg)]) async -> [Stamps] {
        var requests: [HistoryStore.Append] = []
        /// For each request: the message it belongs to, and the user's index in `mids` (nil: the room).
        var positions: [(message: Int, user: Int?)] = []
        let brokenStreams = broken.withLock { $0 }
        var stamps = pushes.map { item in
            Stamps(users: item.push.mids.isEmpty ? [] : Array(repeating: nil, count: item.push.mids.count))
        }
        for (index, item) in pushes.enumerated() {
            let id = Self.messageID(item.message)
            let body = ByteBuffer(bytes: item.push.msg)
            if item.push.type == .room, let limits = policy.limits(forRoom: item.push.room) {
                let stream = HistoryStream.room(item.push.room)
                requests.append(HistoryStore.Append(
                    stream: stream, messageID: id, operation: item.push.operation, body: body, limits: limits,
                    newEpoch: brokenStreams.contains(stream)))
                positions.append((index, nil))
            } else if item.push.type == .push, let limits = policy.mids {
                for (user, mid) in item.push.mids.enumerated() {
                    let stream = HistoryStream.mid(mid)
                    requests.append(HistoryStore.Append(
                        stream: stream, messageID: id, operation: item.push.operation, body: body, limits: limits,
                        newEpoch: brokenStreams.contains(stream)))
                    positions.append((index, user))
                }
            }
        }
        guard !requests.isEmpty else { return stamps }
        let results = await store.append(requests)
        var failed: Set<HistoryStream> = []
        var healed: Set<HistoryStream> = []
        var firstError: HistoryError?
        var written = 0
        for (position, (request, result)) in zip(positions, zip(requests, results)) {
            switch result {
            case .success(let stamp):
                written += 1
                if let user = position.user {
                    stamps[position.message].users[user] = stamp
                } else {
                    stamps[position.message].room = stamp
                }
                healed.insert(request.stream)
                failed.remove(request.stream)
            case .failure(let error):
                firstError = firstError ?? error
                failed.insert(request.stream)
            }
        }
        statistics.historyWrites.increment(by: written)
        if written < requests.count {
            statistics.historyFailures.increment(by: requests.count - written)
            logger.warning("cannot write history; sending without offsets, next write starts a new epoch", metadata: [
                "goim.failed": "\(requests.count - written)", "error": "\(firstError.map { "\($0)" } ?? "")",
            ])
        }
        if !failed.isEmpty || !brokenStreams.isEmpty {
            broken.withLock { set in
                set.subtract(healed.subtracting(failed))
                set.formUnion(failed)
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
