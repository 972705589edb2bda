import NIOCore

/// goim packets carried by WebSocket: exactly one packet per binary (or text) message, both ways.
public enum WebSocketPacket {
    /// Decodes the one packet at the start of `message`, as goim's `ReadWebsocket` does, plus the
    /// check goim lacks: `packLen` must not exceed the message (goim bug 6).
    ///
    /// Bytes after `packLen` are ignored by default, as goim does (bug 7: an extra packet in the
    /// same message is lost). Pass `rejectingTrailingBytes: true` to get ``ProtocolError/trailingBytes(_:)``
    /// instead. A `packLen` of 0…15 is a header-only packet, as in goim; the body is a slice of `message`.
    public static func decode(
        _ message: ByteBuffer,
        limits: PacketLimits = .goim,
        rejectingTrailingBytes: Bool = false
    ) throws(ProtocolError) -> Packet {
        guard let header = RawHeader(message, at: message.readerIndex) else {
            throw .messageShorterThanHeader(message.readableBytes)
        }
        guard header.packetLength >= 0 else { throw .negativePacketLength(header.packetLength) }
        guard Int(header.packetLength) <= limits.maxPacketLength else {
            throw .bodyTooLarge(packetLength: Int(header.packetLength), limit: limits.maxBodySize)
        }
        guard header.headerLength == PacketHeader.length else { throw .badHeaderLength(header.headerLength) }
        guard Int(header.packetLength) <= message.readableBytes else {
            throw .packetLengthExceedsMessage(packetLength: Int(header.packetLength), messageLength: message.readableBytes)
        }
        let bodyLength = header.bodyLength
        let trailing = message.readableBytes - PacketHeader.length - bodyLength
        if rejectingTrailingBytes && trailing > 0 { throw .trailingBytes(trailing) }
        let body = message.getSlice(at: message.readerIndex + PacketHeader.length, length: bodyLength)!
        return header.packet(body: body)
    }

    /// The message payload for `packet`: the packet itself, header included.
    public static func encode(_ packet: Packet, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: packet.encodedLength)
        buffer.writePacket(packet)
        return buffer
    }
}
