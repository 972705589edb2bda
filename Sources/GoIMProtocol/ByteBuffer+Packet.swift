import NIOCore

extension ByteBuffer {
    /// Appends `packet` (header and body) and returns the number of bytes written.
    /// Outbound packets have no size limit beyond `packLen` fitting an int32.
    @discardableResult
    public mutating func writePacket(_ packet: Packet) -> Int {
        reserveCapacity(minimumWritableBytes: packet.encodedLength)
        let header = writePacketHeader(
            operation: packet.operation,
            version: packet.version,
            sequence: packet.sequence,
            bodyLength: packet.body.readableBytes
        )
        return header + writeImmutableBuffer(packet.body)
    }

    /// Appends a 16-byte header for a body of `bodyLength` bytes that the caller writes next.
    @discardableResult
    public mutating func writePacketHeader(
        operation: Operation,
        version: Int16 = 1,
        sequence: Int32 = 0,
        bodyLength: Int
    ) -> Int {
        precondition(
            bodyLength >= 0 && bodyLength <= Int(Int32.max) - PacketHeader.length,
            "goim body length \(bodyLength) does not fit packLen"
        )
        return writeMultipleIntegers(
            Int32(PacketHeader.length + bodyLength),
            Int16(PacketHeader.length),
            version,
            operation.rawValue,
            sequence
        )
    }

    /// Reads one packet from a TCP stream, as goim's `ReadTCP` does.
    ///
    /// Returns nil, consuming nothing, until the whole packet is readable. The header is
    /// validated first, so a hostile `packLen` never makes the caller wait for or buffer more
    /// than `limits.maxPacketLength` bytes. A `packLen` below 16, even negative, is a
    /// header-only packet with an empty body (goim bug 12, kept for compatibility).
    public mutating func readPacket(limits: PacketLimits = .goim) throws(ProtocolError) -> Packet? {
        guard let header = RawHeader(self, at: readerIndex) else { return nil }
        // goim checks packLen before headerLen; keep its order so errors match.
        guard Int(header.packetLength) <= limits.maxPacketLength else {
            throw .bodyTooLarge(packetLength: Int(header.packetLength), limit: limits.maxBodySize)
        }
        guard header.headerLength == PacketHeader.length else { throw .badHeaderLength(header.headerLength) }
        let bodyLength = header.bodyLength
        guard readableBytes >= PacketHeader.length + bodyLength else { return nil }
        moveReaderIndex(forwardBy: PacketHeader.length)
        return header.packet(body: readSlice(length: bodyLength)!)
    }
}

/// The five header fields exactly as on the wire, before validation.
struct RawHeader {
    var packetLength: Int32
    var headerLength: Int16
    var version: Int16
    var operation: Int32
    var sequence: Int32

    /// Nil when fewer than 16 bytes are readable at `index`.
    init?(_ buffer: ByteBuffer, at index: Int) {
        guard
            let (packetLength, headerLength, version, operation, sequence) = buffer.getMultipleIntegers(
                at: index,
                as: (Int32, Int16, Int16, Int32, Int32).self
            )
        else { return nil }
        self.packetLength = packetLength
        self.headerLength = headerLength
        self.version = version
        self.operation = operation
        self.sequence = sequence
    }

    /// `packLen − 16`, or 0 when that is negative (goim: "zero or negative means empty").
    var bodyLength: Int { max(0, Int(packetLength) - PacketHeader.length) }

    func packet(body: ByteBuffer) -> Packet {
        Packet(version: version, operation: Operation(operation), sequence: sequence, body: body)
    }
}
