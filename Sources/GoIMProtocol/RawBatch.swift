import NIOCore

/// Bodies of op 9 (``Operation/raw``) envelopes: complete packets back to back, as Job builds them.
public enum RawBatch {
    /// Concatenates `packets` into one envelope body.
    // Inlinable (as the two `append`s): unspecialized, iterating `some Sequence` cost one allocation per packet
    // (26 for a batch of 20 in the micro-benchmark).
    @inlinable
    public static func encode(_ packets: some Sequence<Packet>) -> ByteBuffer {
        var buffer = ByteBuffer()
        for packet in packets { buffer.writePacket(packet) }
        return buffer
    }

    /// Appends one pushed message as an inner packet with `ver` 1 and `seq` 0, as goim's Job does.
    /// A message of a room with history carries its offset in `sequence` (swift-goim, docs/history.md).
    @inlinable
    public static func append(
        operation: Operation, body: some Collection<UInt8>, sequence: Int32 = 0, to buffer: inout ByteBuffer
    ) {
        buffer.reserveCapacity(minimumWritableBytes: PacketHeader.length + body.count)
        buffer.writePacketHeader(operation: operation, version: 1, sequence: sequence, bodyLength: body.count)
        buffer.writeBytes(body)
    }

    /// Appends `packet` as it is.
    @inlinable
    public static func append(_ packet: Packet, to buffer: inout ByteBuffer) {
        buffer.writePacket(packet)
    }

    /// Splits an envelope body into its packets; bodies are slices of `body`.
    ///
    /// Inner packets are server output, so no size limit applies, but each must have
    /// `headerLen` 16, a `packLen` of at least 16 (else a client cannot walk the batch) and
    /// lie wholly inside `body`.
    public static func split(_ body: ByteBuffer) throws(ProtocolError) -> [Packet] {
        var packets: [Packet] = []
        var offset = 0
        while offset < body.readableBytes {
            let available = body.readableBytes - offset
            guard let header = RawHeader(body, at: body.readerIndex + offset) else {
                throw .truncatedBatch(offset: offset, needed: PacketHeader.length, available: available)
            }
            guard header.packetLength >= PacketHeader.length else {
                throw .packetLengthTooShort(header.packetLength, offset: offset)
            }
            guard header.headerLength == PacketHeader.length else { throw .badHeaderLength(header.headerLength) }
            let length = Int(header.packetLength)
            guard length <= available else {
                throw .truncatedBatch(offset: offset, needed: length, available: available)
            }
            let inner = body.getSlice(at: body.readerIndex + offset + PacketHeader.length, length: header.bodyLength)!
            packets.append(header.packet(body: inner))
            offset += length
        }
        return packets
    }
}
