import NIOCore

/// One goim packet: a 16-byte big-endian header (`packLen`, `headerLen`, `ver`, `op`, `seq`) and a body.
public struct Packet: Sendable, Hashable {
    /// Replies echo the client's value; pushes use 1. Never checked on input.
    public var version: Int16
    public var operation: Operation
    /// Replies echo the client's value; pushes use 0. Never checked on input.
    public var sequence: Int32
    /// Decoded packets hold a slice of the input buffer, not a copy.
    public var body: ByteBuffer

    public init(version: Int16 = 1, operation: Operation, sequence: Int32 = 0, body: ByteBuffer = ByteBuffer()) {
        self.version = version
        self.operation = operation
        self.sequence = sequence
        self.body = body
    }

    /// Bytes this packet takes on the wire: header plus body (the `packLen` it is written with).
    public var encodedLength: Int { PacketHeader.length + body.readableBytes }
}

/// Constants of the fixed packet header.
public enum PacketHeader {
    /// Size of the header and the only `headerLen` accepted on input.
    public static let length = 16
    /// goim's `MaxBodySize`: the largest body a client may send (outbound bodies are unlimited).
    public static let maxInboundBodySize = 4096
}

/// Limits applied to packets read from clients.
public struct PacketLimits: Sendable, Hashable {
    /// Largest accepted body; a `packLen` above `16 + maxBodySize` is an error.
    public var maxBodySize: Int

    public init(maxBodySize: Int = PacketHeader.maxInboundBodySize) {
        precondition(maxBodySize >= 0 && maxBodySize <= Int(Int32.max) - PacketHeader.length, "maxBodySize out of range")
        self.maxBodySize = maxBodySize
    }

    /// goim's limits: 4096-byte bodies, 4112-byte packets.
    public static let goim = PacketLimits()

    /// Largest accepted `packLen`.
    public var maxPacketLength: Int { PacketHeader.length + maxBodySize }
}
