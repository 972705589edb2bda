import GoIMProtocol
import NIOCore
import Testing

/// The worked bytes of reference §2.10, byte for byte.
@Suite("Golden bytes (reference §2.10)")
struct GoldenBytesTests {
    let allocator = ByteBufferAllocator()

    @Test func jsClientAuthPacket() throws {
        #expect(jsAuthBody.utf8.count == 82)
        let packet = Packet(version: 1, operation: .auth, sequence: 1, body: ByteBuffer(string: jsAuthBody))
        var out = ByteBuffer()
        #expect(out.writePacket(packet) == 98)
        #expect(hex(out) == "00000062" + "0010" + "0001" + "00000007" + "00000001" + hex(ByteBuffer(string: jsAuthBody)))

        let decoded = try #require(try out.readPacket())
        #expect(decoded == packet)
        #expect(out.readableBytes == 0)
        let auth = try AuthBody.decode(decoded.body)
        #expect(auth == AuthBody(mid: 123, roomID: "live://1000", platform: "web", accepts: [1000, 1001, 1002]))
    }

    @Test func authReply() {
        var out = ByteBuffer()
        out.writePacket(Packet(version: 1, operation: .authReply, sequence: 1))
        #expect(hex(out) == "00000010001000010000000800000001")
    }

    @Test func heartbeat() {
        var out = ByteBuffer()
        out.writePacket(Packet(version: 1, operation: .heartbeat, sequence: 1))
        #expect(hex(out) == "00000010001000010000000200000001")
    }

    @Test func heartbeatReplyOnlineOne() {
        let expected = "00000014" + "0010" + "0001" + "00000003" + "00000001" + "00000001"
        var out = ByteBuffer()
        out.writePacket(Packet(version: 1, operation: .heartbeatReply, sequence: 1, body: HeartbeatReply.body(online: 1)))
        #expect(hex(out) == expected)

        var direct = ByteBuffer()
        #expect(HeartbeatReply.write(online: 1, version: 1, sequence: 1, to: &direct) == 20)
        #expect(hex(direct) == expected)
        #expect(HeartbeatReply.online(in: HeartbeatReply.body(online: 1)) == 1)
    }

    static let innerHello = "00000015" + "0010" + "0001" + "000003e8" + "00000000" + "68656c6c6f"

    @Test func innerPushPacket() {
        var out = ByteBuffer()
        RawBatch.append(operation: 1000, body: Array("hello".utf8), to: &out)
        #expect(hex(out) == Self.innerHello)
        #expect(hex(RawBatch.encode([Packet(operation: 1000, body: ByteBuffer(string: "hello"))])) == Self.innerHello)
    }

    @Test func webSocketEnvelope() {
        let body = buffer(hex: Self.innerHello)
        let payload = PushFrame.webSocketPayload(version: 1, operation: .raw, sequence: 0, body: body, allocator: allocator)
        #expect(hex(payload) == "00000025" + "0010" + "0001" + "00000009" + "00000000" + Self.innerHello)
    }

    @Test func tcpPushIsInnerPacketsOnly() {
        let body = buffer(hex: Self.innerHello)
        let bytes = PushFrame.tcpBytes(version: 1, operation: .raw, sequence: 0, body: body, allocator: allocator)
        #expect(hex(bytes) == Self.innerHello)
    }

    @Test func nonRawPushIsOnePacketOnBothTransports() {
        let body = ByteBuffer(string: "hello")
        let tcp = PushFrame.tcpBytes(version: 1, operation: 1000, sequence: 0, body: body, allocator: allocator)
        let ws = PushFrame.webSocketPayload(version: 1, operation: 1000, sequence: 0, body: body, allocator: allocator)
        #expect(hex(tcp) == Self.innerHello)
        #expect(hex(ws) == Self.innerHello)
    }

    @Test func pushBodiesAreUnlimitedOutbound() throws {
        let big = ByteBuffer(repeating: 0x61, count: 10_000)
        let ws = PushFrame.webSocketPayload(version: 1, operation: 1000, sequence: 0, body: big, allocator: allocator)
        #expect(ws.readableBytes == 10_016)
        #expect(ws.getInteger(at: 0, as: Int32.self) == 10_016)
        #expect(try WebSocketPacket.decode(ws, limits: PacketLimits(maxBodySize: 10_000)).body == big)
    }
}
