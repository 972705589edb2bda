import GoIMProtocol
import NIOCore
import Testing

@Suite("WebSocketPacket: one packet per message")
struct WebSocketPacketTests {
    func message(_ packet: Packet) -> ByteBuffer {
        WebSocketPacket.encode(packet, allocator: ByteBufferAllocator())
    }

    @Test func decodesTheJSClientAuthMessage() throws {
        let auth = Packet(version: 1, operation: .auth, sequence: 1, body: ByteBuffer(string: jsAuthBody))
        let bytes = message(auth)
        #expect(bytes.readableBytes == 98)
        #expect(try WebSocketPacket.decode(bytes) == auth)
    }

    @Test func headerOnlyMessage() throws {
        let decoded = try WebSocketPacket.decode(buffer(hex: "00000010001000010000000200000001"))
        #expect(decoded == Packet(version: 1, operation: .heartbeat, sequence: 1))
    }

    @Test func honoursTheReaderIndex() throws {
        var bytes = ByteBuffer(string: "xyz")
        bytes.writeImmutableBuffer(message(Packet(operation: 1000, body: ByteBuffer(string: "hello"))))
        bytes.moveReaderIndex(forwardBy: 3)
        #expect(try WebSocketPacket.decode(bytes).body == ByteBuffer(string: "hello"))
    }

    /// Like goim, a packLen of 0…15 is header-only; the rest of the message is trailing bytes.
    @Test(arguments: [Int32(0), 1, 15])
    func shortPacketLengthIsHeaderOnly(packLen: Int32) throws {
        let decoded = try WebSocketPacket.decode(rawHeader(packLen: packLen, op: 2))
        #expect(decoded.operation == .heartbeat)
        #expect(decoded.body.readableBytes == 0)
    }

    @Test(arguments: [Int32(-1), -16, Int32.min])
    func negativePacketLength(packLen: Int32) {
        #expect(throws: ProtocolError.negativePacketLength(packLen)) { try WebSocketPacket.decode(rawHeader(packLen: packLen)) }
    }

    @Test(arguments: [0, 1, 15])
    func messageShorterThanHeader(length: Int) {
        let bytes = rawHeader(packLen: 16).getSlice(at: 0, length: length)!
        #expect(throws: ProtocolError.messageShorterThanHeader(length)) { try WebSocketPacket.decode(bytes) }
    }

    @Test func oversizedPacketLength() {
        var bytes = rawHeader(packLen: 4113)
        bytes.writeRepeatingByte(0, count: 4097)
        #expect(throws: ProtocolError.bodyTooLarge(packetLength: 4113, limit: 4096)) { try WebSocketPacket.decode(bytes) }
    }

    @Test func badHeaderLength() {
        #expect(throws: ProtocolError.badHeaderLength(20)) { try WebSocketPacket.decode(rawHeader(packLen: 16, headerLen: 20)) }
    }

    /// goim bug 6: goim would read stale bytes or crash; we reject the message.
    @Test func packetLengthBeyondTheMessage() {
        var bytes = rawHeader(packLen: 21)
        bytes.writeString("hell")
        #expect(throws: ProtocolError.packetLengthExceedsMessage(packetLength: 21, messageLength: 20)) {
            try WebSocketPacket.decode(bytes)
        }
    }

    /// goim bug 7: a second packet in the same message is dropped (goim's wire behaviour),
    /// or rejected in strict mode.
    @Test func trailingBytes() throws {
        var bytes = message(Packet(operation: 1000, body: ByteBuffer(string: "hello")))
        bytes.writeImmutableBuffer(message(Packet(operation: .heartbeat)))
        #expect(try WebSocketPacket.decode(bytes) == Packet(operation: 1000, body: ByteBuffer(string: "hello")))
        #expect(throws: ProtocolError.trailingBytes(16)) { try WebSocketPacket.decode(bytes, rejectingTrailingBytes: true) }

        let exact = message(Packet(operation: .heartbeat))
        #expect(try WebSocketPacket.decode(exact, rejectingTrailingBytes: true).operation == .heartbeat)
    }

    @Test func bodyIsASliceOfTheMessage() throws {
        let bytes = message(Packet(operation: 1000, body: ByteBuffer(string: "hello")))
        let base = bytes.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let body = try WebSocketPacket.decode(bytes).body
        #expect(body.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } == base + 16)
    }
}
