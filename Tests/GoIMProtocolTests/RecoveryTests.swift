import Foundation
import GoIMProtocol
import NIOCore
import Testing

/// The recovery opt-in of the auth body and of op 12, the op 8 body, and packets with offsets (docs/protocol.md).
struct RecoveryTests {
    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func goimBodiesAskForNothing() {
        #expect(RecoveryRequest.parse(Self.bytes(#"{"mid":1,"room_id":"live://1","accepts":[1000]}"#)) == nil)
        #expect(RecoveryRequest.parse(Self.bytes("")) == nil)
        #expect(RecoveryRequest.parse(Self.bytes("not json at all")) == nil)
        // The word inside a string is not the field.
        #expect(RecoveryRequest.parse(Self.bytes(#"{"key":"\"recover\""}"#)) == nil)
        #expect(RoomChangeRequest.parse(Self.bytes("live://1000")) == nil)
        #expect(RoomChangeRequest.parse(Self.bytes("")) == nil)
        #expect(RoomChangeRequest.parse(Self.bytes(#"{"roomz":"x"}"#)) == nil)
    }

    @Test func recoverObjects() {
        #expect(
            RecoveryRequest.parse(Self.bytes(#"{"mid":1,"recover":{"epoch":"abc","offset":41}}"#))
                == RecoveryRequest(epoch: "abc", offset: 41))
        let first = RecoveryRequest.parse(Self.bytes(#"{"token":"t","recover":{}}"#))
        #expect(first == RecoveryRequest(epoch: "", offset: 0) && first?.wantsRecovery == false)
        // Members of the wrong type: a first connect, not a failure.
        #expect(RecoveryRequest.parse(Self.bytes(#"{"recover":{"epoch":5,"offset":"x"}}"#)) == RecoveryRequest(epoch: "", offset: 0))
        #expect(RecoveryRequest.parse(Self.bytes(#"{"recover":{"epoch":"e","offset":-3}}"#)) == RecoveryRequest(epoch: "e", offset: 0))
        #expect(RecoveryRequest.parse(Self.bytes(#"{"recover":"yes"}"#)) == nil)
        let change = RoomChangeRequest.parse(Self.bytes(#" {"room":"live://2","recover":{"epoch":"e","offset":7}}"#))
        #expect(change == RoomChangeRequest(room: "live://2", recover: RecoveryRequest(epoch: "e", offset: 7)))
        #expect(RoomChangeRequest.parse(Self.bytes(#"{"room":""}"#)) == RoomChangeRequest(room: "", recover: RecoveryRequest(epoch: "", offset: 0)))
    }

    @Test func userStreamPosition() {
        let request = RecoveryRequest.parse(
            Self.bytes(#"{"mid":7,"room_id":"","recover":{"epoch":"","offset":0,"mid":{"epoch":"u1","offset":12}}}"#))
        #expect(request == RecoveryRequest(epoch: "", offset: 0, mid: StreamPosition(epoch: "u1", offset: 12)))
        #expect(request?.mid?.wantsRecovery == true)
        // A first connect of the user stream; members of the wrong type count as one too.
        #expect(RecoveryRequest.parse(Self.bytes(#"{"recover":{"mid":{}}}"#))?.mid == StreamPosition(epoch: "", offset: 0))
        #expect(RecoveryRequest.parse(Self.bytes(#"{"recover":{"mid":{"epoch":1,"offset":"x"}}}"#))?.mid == StreamPosition(epoch: "", offset: 0))
        // No "mid" member, or not an object: the user's pushes stay goim's.
        #expect(RecoveryRequest.parse(Self.bytes(#"{"recover":{"epoch":"e","offset":1}}"#))?.mid == nil)
        #expect(RecoveryRequest.parse(Self.bytes(#"{"recover":{"mid":5}}"#))?.mid == nil)
    }

    @Test func replyBodyWithUserStream() {
        let reply = RecoveryReply(
            key: nil, room: "", epoch: "", offset: 0, recovering: false, recovered: false,
            mid: .init(epoch: "00000000000000aa", offset: 5, recovering: true, recovered: true))
        #expect(
            String(buffer: reply.body)
                == #"{"room":"","epoch":"","offset":0,"recovering":false,"recovered":false,"mid":{"epoch":"00000000000000aa","offset":5,"recovering":true,"recovered":true}}"#
        )
        let json = try? JSONSerialization.jsonObject(with: Data(reply.body.readableBytesView)) as? [String: Any]
        #expect((json?["mid"] as? [String: Any])?["offset"] as? Int == 5)
    }

    @Test func replyBody() {
        let reply = RecoveryReply(key: nil, room: "live://1000", epoch: "9f3c2a7b1d4e6f80", offset: 43, recovering: true, recovered: true)
        #expect(String(buffer: reply.body) == #"{"room":"live://1000","epoch":"9f3c2a7b1d4e6f80","offset":43,"recovering":true,"recovered":true}"#)
        #expect(reply.body.readableBytes == 96)  // docs/protocol.md's byte example
        let withKey = RecoveryReply(key: "k\"1", room: "r", epoch: "", offset: 0, recovering: false, recovered: false)
        #expect(String(buffer: withKey.body) == #"{"key":"k\"1","room":"r","epoch":"","offset":0,"recovering":false,"recovered":false}"#)
    }

    @Test func packetsWithOffsets() throws {
        var body = ByteBuffer()
        OffsetPackets.append(offset: 42, operation: 1000, body: Array("hello".utf8), to: &body)
        OffsetPackets.append(offset: 43, operation: 1000, body: Array("world".utf8), to: &body)
        // docs/protocol.md: 00000015 0010 0001 000003e8 0000002a 68656c6c6f
        #expect(Array(body.readableBytesView.prefix(21)) == [0, 0, 0, 0x15, 0, 0x10, 0, 1, 0, 0, 3, 0xe8, 0, 0, 0, 0x2a] + Array("hello".utf8))
        let items = try #require(OffsetPackets.split(body))
        #expect(items.map(\.offset) == [42, 43] && items.map(\.bytes.readableBytes) == [21, 21])
        let plain = OffsetPackets.zeroingSequences(body)
        #expect(try RawBatch.split(plain).map(\.sequence) == [0, 0])
        #expect(try RawBatch.split(body).map(\.sequence) == [42, 43])  // the original is untouched
        // A user stream's form: -offset (docs/protocol.md's example: seq fffffffb for offset 5).
        #expect(try RawBatch.split(OffsetPackets.negatingSequences(body)).map(\.sequence) == [-42, -43])
        var five = ByteBuffer()
        OffsetPackets.append(offset: 5, operation: 1000, body: Array("hi".utf8), to: &five)
        #expect(Array(OffsetPackets.negatingSequences(five).readableBytesView) == [0, 0, 0, 0x12, 0, 0x10, 0, 1, 0, 0, 3, 0xe8, 0xff, 0xff, 0xff, 0xfb, 0x68, 0x69])
        // Not a run of packets with positive offsets: nil.
        var zero = ByteBuffer()
        RawBatch.append(operation: 1000, body: Array("x".utf8), to: &zero)
        #expect(OffsetPackets.split(zero) == nil)
        #expect(OffsetPackets.split(body.getSlice(at: body.readerIndex, length: 30)!) == nil)
        #expect(OffsetPackets.split(ByteBuffer(bytes: [0, 0, 0, 8])) == nil)
    }
}
