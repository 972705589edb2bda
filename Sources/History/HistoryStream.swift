import NIOCore

/// One ordered stream with history: a room, or the pushes addressed to one user (mid).
public enum HistoryStream: Sendable, Hashable, CustomStringConvertible {
    case room(String)
    case mid(Int64)

    /// The Redis hash tag: every key of one stream lives in one Redis Cluster slot.
    var tag: String {
        switch self {
        case .room(let id): "{room:\(id)}"
        case .mid(let mid): "{mid:\(mid)}"
        }
    }

    /// `hist:{room:live://1000}:meta`: hash with `epoch` and `offset` (the last offset given).
    var metaKey: String { "hist:\(tag):meta" }
    /// `hist:{...}:log`: list of entries `<offset>:<operation>:<body>`, oldest first, at most `size`.
    var logKey: String { "hist:\(tag):log" }
    /// `hist:{...}:ids`: sorted set of the queue message ids written, scored by their offset (a redelivered message
    /// gets its first offset again).
    var idsKey: String { "hist:\(tag):ids" }

    public var description: String {
        switch self {
        case .room(let id): "room \(id)"
        case .mid(let mid): "mid \(mid)"
        }
    }
}

/// A message read back from history.
public struct HistoryMessage: Sendable, Equatable {
    public var offset: UInt64
    public var operation: Int32
    public var body: ByteBuffer

    public init(offset: UInt64, operation: Int32, body: ByteBuffer) {
        self.offset = offset
        self.operation = operation
        self.body = body
    }
}

/// The answer to "what came after offset `since` of epoch `epoch`".
public struct HistoryPage: Sendable, Equatable {
    /// The stream's current epoch; empty when the stream has no history (never written, expired, or lost).
    public var epoch: String
    /// The last offset given in this epoch (0 when none).
    public var top: UInt64
    /// The offset of the oldest message still held (`top + 1` when none is).
    public var first: UInt64
    /// The messages after `since`, oldest first, at most `limit`.
    public var messages: [HistoryMessage]
    /// True when `messages` are exactly every message after `since` up to `top`: same epoch, nothing trimmed or
    /// expired in between, and `limit` did not cut the list short.
    public var complete: Bool

    public init(epoch: String, top: UInt64, first: UInt64, messages: [HistoryMessage], complete: Bool) {
        self.epoch = epoch
        self.top = top
        self.first = first
        self.messages = messages
        self.complete = complete
    }
}

/// The place one message got in its stream.
public struct HistoryStamp: Sendable, Equatable {
    public var offset: UInt64
    public var epoch: String
    /// The message had been written before (a redelivery): this is its first offset.
    public var repeated: Bool

    public init(offset: UInt64, epoch: String, repeated: Bool) {
        self.offset = offset
        self.epoch = epoch
        self.repeated = repeated
    }
}

public enum HistoryError: Error, Sendable, CustomStringConvertible {
    case unavailable(String)
    case malformedReply(String)

    public var description: String {
        switch self {
        case .unavailable(let reason): "history store unavailable: \(reason)"
        case .malformedReply(let reason): "history store answered something unexpected: \(reason)"
        }
    }
}
