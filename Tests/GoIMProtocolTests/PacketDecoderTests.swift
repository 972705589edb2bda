import GoIMProtocol
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@Suite("PacketDecoder / PacketEncoder on a channel")
struct PacketDecoderTests {
    static let packets = [
        Packet(version: 1, operation: .auth, sequence: 1, body: ByteBuffer(string: jsAuthBody)),
        Packet(version: 1, operation: .heartbeat, sequence: 2),
        Packet(version: 0, operation: .sub, sequence: 3, body: ByteBuffer(string: "1000,1001")),
        Packet(version: 1, operation: 1000, sequence: 0, body: ByteBuffer(string: "hello")),
    ]

    static var stream: ByteBuffer {
        var buffer = ByteBuffer()
        for packet in packets { buffer.writePacket(packet) }
        return buffer
    }

    func makeChannel(limits: PacketLimits = .goim) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(PacketDecoder(limits: limits)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(PacketEncoder()))
        return channel
    }

    func readAll(_ channel: EmbeddedChannel) throws -> [Packet] {
        var packets: [Packet] = []
        while let packet = try channel.readInbound(as: Packet.self) { packets.append(packet) }
        return packets
    }

    @Test func verifier() throws {
        var pairs: [(ByteBuffer, [Packet])] = []
        for packet in Self.packets {
            var bytes = ByteBuffer()
            bytes.writePacket(packet)
            pairs.append((bytes, [packet]))
        }
        pairs.append((Self.stream, Self.packets))
        // A short packLen is header-only on TCP: exactly 16 bytes are consumed.
        pairs.append((rawHeader(packLen: -7, op: 2, seq: 4), [Packet(operation: .heartbeat, sequence: 4)]))
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { PacketDecoder() }
    }

    @Test func manyPacketsInOneRead() throws {
        let channel = try makeChannel()
        try channel.writeInbound(Self.stream)
        #expect(try readAll(channel) == Self.packets)
        #expect(try channel.finish().isClean)
    }

    @Test func splitAtEveryBytePosition() throws {
        let stream = Self.stream
        for cut in 0...stream.readableBytes {
            let channel = try makeChannel()
            try channel.writeInbound(stream.getSlice(at: 0, length: cut)!)
            let first = try readAll(channel)
            try channel.writeInbound(stream.getSlice(at: cut, length: stream.readableBytes - cut)!)
            #expect(first + (try readAll(channel)) == Self.packets, "cut at \(cut)")
            #expect(try channel.finish().isClean)
        }
    }

    @Test func oneByteAtATime() throws {
        let channel = try makeChannel()
        var stream = Self.stream
        var received: [Packet] = []
        while let byte = stream.readSlice(length: 1) {
            try channel.writeInbound(byte)
            received += try readAll(channel)
        }
        #expect(received == Self.packets)
        #expect(try channel.finish().isClean)
    }

    @Test func oversizedPacketFailsTheChannel() throws {
        let channel = try makeChannel()
        var bytes = ByteBuffer()
        bytes.writePacket(Self.packets[1])
        bytes.writeImmutableBuffer(rawHeader(packLen: 4113))
        #expect(throws: ProtocolError.bodyTooLarge(packetLength: 4113, limit: 4096)) { try channel.writeInbound(bytes) }
        // The packet before the bad header is still delivered.
        #expect(try readAll(channel) == [Self.packets[1]])
        _ = try? channel.finish()
    }

    @Test func badHeaderLengthFailsTheChannel() throws {
        let channel = try makeChannel()
        #expect(throws: ProtocolError.badHeaderLength(12)) {
            try channel.writeInbound(rawHeader(packLen: 16, headerLen: 12))
        }
        _ = try? channel.finish()
    }

    @Test func partialPacketAtEOFIsDropped() throws {
        let channel = try makeChannel()
        let stream = Self.stream
        try channel.writeInbound(stream.getSlice(at: 0, length: stream.readableBytes - 1)!)
        #expect(try readAll(channel) == Array(Self.packets.dropLast()))
        #expect(try channel.finish().isClean)
    }

    @Test func encoderWritesPackets() throws {
        let channel = try makeChannel()
        for packet in Self.packets { try channel.writeOutbound(packet) }
        var written = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { written.writeBuffer(&chunk) }
        #expect(written == Self.stream)
        #expect(try channel.finish().isClean)
    }
}
