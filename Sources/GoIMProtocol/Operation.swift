/// A goim operation code (the `op` field of a packet).
///
/// Any `Int32` is a valid operation: values outside goim's table are business operations
/// (goim's examples use 1000, 1001, 1002), which the server forwards or pushes unchanged.
public struct Operation: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// Not implemented by goim v2 (a v1 design); handled like any other op after auth.
    public static let handshake = Operation(0)
    public static let handshakeReply = Operation(1)
    public static let heartbeat = Operation(2)
    /// Body: the room's online count as a 4-byte big-endian int32.
    public static let heartbeatReply = Operation(3)
    public static let sendMsg = Operation(4)
    public static let sendMsgReply = Operation(5)
    public static let disconnectReply = Operation(6)
    /// Body: JSON ``AuthBody``.
    public static let auth = Operation(7)
    public static let authReply = Operation(8)
    /// Batch envelope: the body is complete packets back to back (see ``RawBatch``, ``PushFrame``).
    public static let raw = Operation(9)
    /// Internal to goim's Comet; never on the wire.
    public static let protoReady = Operation(10)
    /// Internal to goim's Comet; never on the wire.
    public static let protoFinish = Operation(11)
    public static let changeRoom = Operation(12)
    public static let changeRoomReply = Operation(13)
    /// Body: comma-separated ops to add to the watch set (see ``WatchOps``).
    public static let sub = Operation(14)
    public static let subReply = Operation(15)
    /// Body: comma-separated ops to remove from the watch set (see ``WatchOps``).
    public static let unsub = Operation(16)
    public static let unsubReply = Operation(17)
    /// swift-goim, not in goim: body = a fresh token (as in op 7); see ``TokenRefreshReply``.
    public static let tokenRefresh = Operation(18)
    /// swift-goim, not in goim: body = JSON ``TokenRefreshReply``.
    public static let tokenRefreshReply = Operation(19)

    /// goim's name for the known operations, nil for business operations.
    public var name: String? {
        switch rawValue {
        case 0: "handshake"
        case 1: "handshakeReply"
        case 2: "heartbeat"
        case 3: "heartbeatReply"
        case 4: "sendMsg"
        case 5: "sendMsgReply"
        case 6: "disconnectReply"
        case 7: "auth"
        case 8: "authReply"
        case 9: "raw"
        case 10: "protoReady"
        case 11: "protoFinish"
        case 12: "changeRoom"
        case 13: "changeRoomReply"
        case 14: "sub"
        case 15: "subReply"
        case 16: "unsub"
        case 17: "unsubReply"
        case 18: "tokenRefresh"
        case 19: "tokenRefreshReply"
        default: nil
        }
    }

    /// "auth(7)" for known operations, "op 1000" for business ones.
    public var description: String {
        if let name { "\(name)(\(rawValue))" } else { "op \(rawValue)" }
    }
}

extension Operation: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int32) { self.rawValue = value }
}
