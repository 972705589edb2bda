import GoIMProtocol
import NIOCore
import Testing

@Suite("RawBatch: op 9 envelope bodies")
struct RawBatchTests {
    static let packets = [
        Packet(operation: 1000, body: ByteBuffer(string: "hello")),
        Packet(operation: 1001, body: ByteBuffer()),
        Packet(operation: 1002, body: ByteBuffer(repeating: 0x7a, count: 5000)),  // outbound: no size limit
    ]

    @Test func encodeThenSplit() throws {
        let body = RawBatch.encode(Self.packets)
        #expect(body.readableBytes == 21 + 16 + 5016)
        #expect(try RawBatch.split(body) == Self.packets)
    }

    @Test func appendMatchesEncode() throws {
        var body = ByteBuffer()
        for packet in Self.packets {
            RawBatch.append(operation: packet.operation, body: packet.body.readableBytesView, to: &body)
        }
        #expect(body == RawBatch.encode(Self.packets))
        var viaPacket = ByteBuffer()
        for packet in Self.packets { RawBatch.append(packet, to: &viaPacket) }
        #expect(viaPacket == body)
    }

    @Test func emptyBatch() throws {
        #expect(try RawBatch.split(ByteBuffer()) == [])
        #expect(RawBatch.encode([Packet]()).readableBytes == 0)
    }

    @Test func splitWalksAWebSocketEnvelopeLikeTheJSClient() throws {
        let body = RawBatch.encode(Self.packets)
        let frame = PushFrame.webSocketPayload(version: 1, operation: .raw, sequence: 0, body: body, allocator: ByteBufferAllocator())
        let envelope = try WebSocketPacket.decode(frame, limits: PacketLimits(maxBodySize: 1 << 20))
        #expect(envelope.operation == .raw)
        #expect(try RawBatch.split(envelope.body) == Self.packets)
    }

    @Test func truncatedInsideAHeader() {
        let body = RawBatch.encode(Self.packets.prefix(1))
        var bytes = body
        bytes.writeBytes([0, 0, 0])
        #expect(throws: ProtocolError.truncatedBatch(offset: 21, needed: 16, available: 3)) { try RawBatch.split(bytes) }
    }

    @Test func truncatedInsideABody() {
        let body = RawBatch.encode(Self.packets.prefix(1))
        let cut = body.getSlice(at: 0, length: 20)!
        #expect(throws: ProtocolError.truncatedBatch(offset: 0, needed: 21, available: 20)) { try RawBatch.split(cut) }
    }

    @Test func innerPacketLengthBelowHeader() {
        var bytes = RawBatch.encode(Self.packets.prefix(1))
        bytes.writeImmutableBuffer(rawHeader(packLen: 0))
        #expect(throws: ProtocolError.packetLengthTooShort(0, offset: 21)) { try RawBatch.split(bytes) }
    }

    @Test func innerBadHeaderLength() {
        #expect(throws: ProtocolError.badHeaderLength(8)) { try RawBatch.split(rawHeader(packLen: 16, headerLen: 8)) }
    }

    @Test func tcpPushOfABatchDecodesAsOrdinaryPackets() throws {
        let body = RawBatch.encode(Self.packets.prefix(2))
        var tcp = PushFrame.tcpBytes(version: 1, operation: .raw, sequence: 0, body: body, allocator: ByteBufferAllocator())
        #expect(try tcp.readPacket() == Self.packets[0])
        #expect(try tcp.readPacket() == Self.packets[1])
        #expect(tcp.readableBytes == 0)
    }
}
