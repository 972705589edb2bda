import NIOCore

/// The op 3 reply body: the room's online count as a 4-byte big-endian int32.
public enum HeartbeatReply {
    public static let bodyLength = 4

    public static func body(online: Int32) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(online)
        return buffer
    }

    /// Writes the whole 20-byte reply (echoing the request's `ver` and `seq`) with no extra buffer.
    @discardableResult
    public static func write(online: Int32, version: Int16, sequence: Int32, to buffer: inout ByteBuffer) -> Int {
        buffer.writePacketHeader(operation: .heartbeatReply, version: version, sequence: sequence, bodyLength: bodyLength)
            + buffer.writeInteger(online)
    }

    /// The online count in a reply body, nil unless it is exactly 4 bytes.
    public static func online(in body: ByteBuffer) -> Int32? {
        body.readableBytes == bodyLength ? body.getInteger(at: body.readerIndex) : nil
    }
}
