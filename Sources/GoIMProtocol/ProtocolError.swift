/// Everything that can be wrong with goim bytes from a peer. goim closes the connection on each of
/// these without sending anything; callers should do the same for the connection concerned only.
public enum ProtocolError: Error, Equatable, CustomStringConvertible {
    /// `packLen` announces a body larger than the limit (checked before reading the body).
    case bodyTooLarge(packetLength: Int, limit: Int)
    /// `headerLen` is not 16.
    case badHeaderLength(Int16)
    /// WebSocket only: a negative `packLen` (TCP accepts it as header-only, like goim).
    case negativePacketLength(Int32)
    /// A packet inside an op 9 batch whose `packLen` is below 16, which would make walking the batch impossible.
    case packetLengthTooShort(Int32, offset: Int)
    /// WebSocket: the message is too short to hold a header.
    case messageShorterThanHeader(Int)
    /// WebSocket: `packLen` is larger than the message that carries it (goim bug 6).
    case packetLengthExceedsMessage(packetLength: Int, messageLength: Int)
    /// WebSocket in strict mode: bytes after the packet (goim drops them silently).
    case trailingBytes(Int)
    /// An op 9 batch ends inside a packet: `needed` bytes from `offset`, only `available` left.
    case truncatedBatch(offset: Int, needed: Int, available: Int)
    /// The auth body is not JSON of the expected shape; the reason names the field.
    case invalidAuthBody(String)

    public var description: String {
        switch self {
        case .bodyTooLarge(let packetLength, let limit):
            "packet length \(packetLength) exceeds the limit of \(PacketHeader.length + limit) bytes (\(limit)-byte body)"
        case .badHeaderLength(let length):
            "header length \(length) is not \(PacketHeader.length)"
        case .negativePacketLength(let length):
            "packet length \(length) is negative"
        case .packetLengthTooShort(let length, let offset):
            "packet at offset \(offset) has length \(length), shorter than its \(PacketHeader.length)-byte header"
        case .messageShorterThanHeader(let length):
            "message of \(length) bytes is shorter than the \(PacketHeader.length)-byte packet header"
        case .packetLengthExceedsMessage(let packetLength, let messageLength):
            "packet length \(packetLength) exceeds the \(messageLength)-byte message carrying it"
        case .trailingBytes(let count):
            "\(count) bytes follow the packet in the same message (one packet per message)"
        case .truncatedBatch(let offset, let needed, let available):
            "batch truncated at offset \(offset): packet needs \(needed) bytes, \(available) left"
        case .invalidAuthBody(let reason):
            "invalid auth body: \(reason)"
        }
    }
}
