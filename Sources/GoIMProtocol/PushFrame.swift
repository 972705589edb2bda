import NIOCore

/// How Comet writes a pushed `Proto` on each transport (reference §2.8).
///
/// An op 9 envelope goes to TCP clients as its body only (the inner packets, so they never see
/// op 9) and to WebSocket clients as one message with a 16-byte op 9 outer header. Any other op
/// is one ordinary packet on both. Encode once, then write the same buffer to many channels.
public enum PushFrame {
    public static func tcpBytes(
        version: Int16,
        operation: Operation,
        sequence: Int32,
        body: ByteBuffer,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        if operation == .raw { return body }
        return packetBytes(version: version, operation: operation, sequence: sequence, body: body, allocator: allocator)
    }

    public static func webSocketPayload(
        version: Int16,
        operation: Operation,
        sequence: Int32,
        body: ByteBuffer,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        // The op 9 outer header is an ordinary packet header, so every op encodes the same way.
        packetBytes(version: version, operation: operation, sequence: sequence, body: body, allocator: allocator)
    }

    private static func packetBytes(
        version: Int16,
        operation: Operation,
        sequence: Int32,
        body: ByteBuffer,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: PacketHeader.length + body.readableBytes)
        buffer.writePacketHeader(operation: operation, version: version, sequence: sequence, bodyLength: body.readableBytes)
        buffer.writeImmutableBuffer(body)
        return buffer
    }
}
