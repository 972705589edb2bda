import GoIMProtocol
import NIOCore
import Testing

@Suite("Packet and ByteBuffer.readPacket (TCP rules)")
struct PacketTests {
    @Test(arguments: [
        Packet(operation: .heartbeat),
        Packet(version: 0, operation: .heartbeat, sequence: 3),
        Packet(version: -1, operation: 1000, sequence: Int32.min, body: ByteBuffer(string: "hello")),
        Packet(version: Int16.max, operation: Operation(Int32.max), sequence: Int32.max, body: ByteBuffer(repeating: 7, count: 4096)),
        Packet(operation: .changeRoom, body: ByteBuffer(string: "live://1000")),
    ])
    func roundTrip(packet: Packet) throws {
        var buffer = ByteBuffer()
        #expect(buffer.writePacket(packet) == packet.encodedLength)
        #expect(buffer.getInteger(at: 0, as: Int32.self) == Int32(packet.encodedLength))
        let decoded = try #require(try buffer.readPacket())
        #expect(decoded == packet)
        #expect(buffer.readableBytes == 0)
    }

    @Test func headerOnlyWriter() {
        var buffer = ByteBuffer()
        #expect(buffer.writePacketHeader(operation: .sub, version: 2, sequence: 9, bodyLength: 9) == 16)
        #expect(hex(buffer) == "00000019" + "0010" + "0002" + "0000000e" + "00000009")
    }

    @Test func decodedBodyIsASliceOfTheInput() throws {
        var buffer = ByteBuffer()
        buffer.writePacket(Packet(operation: 1000, body: ByteBuffer(string: "hello")))
        let base = buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let packet = try #require(try buffer.readPacket())
        let bodyAddress = packet.body.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        #expect(bodyAddress == base + 16)
    }

    @Test func needsMoreBytesConsumesNothing() throws {
        var full = ByteBuffer()
        full.writePacket(Packet(operation: 1000, body: ByteBuffer(string: "hello")))
        for length in 0..<full.readableBytes {
            var partial = full.getSlice(at: 0, length: length)!
            #expect(try partial.readPacket() == nil)
            #expect(partial.readableBytes == length)
        }
    }

    @Test func maximumInboundBodyIsAccepted() throws {
        var buffer = rawHeader(packLen: 4112)
        buffer.writeRepeatingByte(1, count: 4096)
        #expect(try buffer.readPacket()?.body.readableBytes == 4096)
    }

    @Test func oversizedPacketIsRejectedBeforeItsBodyArrives() {
        var buffer = rawHeader(packLen: 4113)  // header only: the body never needs to arrive
        #expect(throws: ProtocolError.bodyTooLarge(packetLength: 4113, limit: 4096)) { try buffer.readPacket() }
        var huge = rawHeader(packLen: Int32.max)
        #expect(throws: ProtocolError.bodyTooLarge(packetLength: Int(Int32.max), limit: 4096)) { try huge.readPacket() }
    }

    @Test func customLimit() throws {
        var buffer = rawHeader(packLen: 16 + 11)
        buffer.writeString("live://1000")
        var copy = buffer
        #expect(throws: ProtocolError.bodyTooLarge(packetLength: 27, limit: 10)) {
            try copy.readPacket(limits: PacketLimits(maxBodySize: 10))
        }
        #expect(try buffer.readPacket(limits: PacketLimits(maxBodySize: 11)) != nil)
    }

    @Test(arguments: [Int16(0), 15, 17, -16, Int16.max])
    func wrongHeaderLength(headerLen: Int16) {
        var buffer = rawHeader(packLen: 16, headerLen: headerLen)
        #expect(throws: ProtocolError.badHeaderLength(headerLen)) { try buffer.readPacket() }
    }

    @Test func packetLengthIsCheckedBeforeHeaderLength() {
        // goim's ReadTCP order: an oversized packLen wins over a bad headerLen.
        var buffer = rawHeader(packLen: 5000, headerLen: 3)
        #expect(throws: ProtocolError.bodyTooLarge(packetLength: 5000, limit: 4096)) { try buffer.readPacket() }
    }

    /// goim bug 12, kept on purpose: TCP accepts packLen < 16 (even negative) as header-only and
    /// consumes exactly 16 bytes.
    @Test(arguments: [Int32(0), 1, 15, -1, Int32.min])
    func shortPacketLengthIsHeaderOnly(packLen: Int32) throws {
        var buffer = rawHeader(packLen: packLen, ver: 3, op: 2, seq: 5)
        buffer.writeString("next")
        let packet = try #require(try buffer.readPacket())
        #expect(packet == Packet(version: 3, operation: .heartbeat, sequence: 5))
        #expect(buffer.readableBytes == 4)
    }

    @Test func operationNamesAndValues() {
        let all: [(Operation, Int32, String)] = [
            (.handshake, 0, "handshake"), (.handshakeReply, 1, "handshakeReply"), (.heartbeat, 2, "heartbeat"),
            (.heartbeatReply, 3, "heartbeatReply"), (.sendMsg, 4, "sendMsg"), (.sendMsgReply, 5, "sendMsgReply"),
            (.disconnectReply, 6, "disconnectReply"), (.auth, 7, "auth"), (.authReply, 8, "authReply"), (.raw, 9, "raw"),
            (.protoReady, 10, "protoReady"), (.protoFinish, 11, "protoFinish"), (.changeRoom, 12, "changeRoom"),
            (.changeRoomReply, 13, "changeRoomReply"), (.sub, 14, "sub"), (.subReply, 15, "subReply"),
            (.unsub, 16, "unsub"), (.unsubReply, 17, "unsubReply"),
        ]
        for (operation, value, name) in all {
            #expect(operation.rawValue == value)
            #expect(operation.name == name)
            #expect(operation.description == "\(name)(\(value))")
            #expect(Operation(rawValue: value) == operation)
        }
        let business: Operation = 1000
        #expect(business.name == nil)
        #expect(business.description == "op 1000")
        #expect(Operation(rawValue: -5).rawValue == -5)
    }

    @Test func errorMessagesAreReadable() {
        #expect(
            ProtocolError.bodyTooLarge(packetLength: 5000, limit: 4096).description
                == "packet length 5000 exceeds the limit of 4112 bytes (4096-byte body)"
        )
        #expect(ProtocolError.badHeaderLength(17).description == "header length 17 is not 16")
        #expect(
            ProtocolError.packetLengthExceedsMessage(packetLength: 40, messageLength: 20).description
                == "packet length 40 exceeds the 20-byte message carrying it"
        )
    }
}
