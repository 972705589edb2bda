import Foundation
import GoIMRPC
import SwiftProtobuf
import Testing

/// Proves our generated messages are goim's on the wire, independently of our generated code:
/// (1) golden bytes worked out by hand from goim's field numbers (reference Appendix A.2);
/// (2) Debian's `protoc --encode` reading the same .proto text, when protoc is installed.
@Suite struct WireCompatibilityTests {
    static func hex(_ data: Data) -> String { data.map { String(format: "%02x", $0) }.joined() }

    static func bytes(_ hex: String) -> Data {
        var data = Data()
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            data.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return data
    }

    static let innerHello = bytes("00000015001000010000" + "03e80000000068656c6c6f")

    @Test func pushMsgRoomMatchesGoldenBytes() throws {
        var message = Goim_Logic_PushMsg()
        message.type = .room
        message.operation = 1000
        message.room = "live://1000"
        message.msg = Data("hello".utf8)
        #expect(Self.hex(try message.serializedData()) == "080110e8072a0b6c6976653a2f2f313030303a0568656c6c6f")
    }

    @Test func pushMsgPushMatchesGoldenBytes() throws {
        var message = Goim_Logic_PushMsg()
        message.operation = 1000
        message.server = "comet-1"
        message.keys = ["k1", "k2"]
        message.msg = Data("hi".utf8)
        #expect(Self.hex(try message.serializedData()) == "10e8072207636f6d65742d3132026b3132026b323a026869")
        let decoded = try Goim_Logic_PushMsg(serializedBytes: try message.serializedData())
        #expect(decoded.type == .push)
        #expect(decoded.keys == ["k1", "k2"])
    }

    @Test func pushMsgBroadcastMatchesGoldenBytes() throws {
        var message = Goim_Logic_PushMsg()
        message.type = .broadcast
        message.operation = 1000
        message.speed = 100
        message.msg = Data("hi".utf8)
        #expect(Self.hex(try message.serializedData()) == "080210e80718643a026869")
    }

    @Test func envelopeAndBroadcastRoomMatchGoldenBytes() throws {
        let proto = Goim_Protocol_Proto(operation: 9, body: [UInt8](Self.innerHello))
        #expect(Self.hex(try proto.serializedData()) == "0801100922150000001500100001000003e80000000068656c6c6f")
        var request = Goim_Comet_BroadcastRoomReq()
        request.roomID = "live://1000"
        request.proto = proto
        #expect(Self.hex(try request.serializedData())
            == "0a0b6c6976653a2f2f31303030121b0801100922150000001500100001000003e80000000068656c6c6f")
    }

    @Test func fieldNumbersOfEveryMessage() throws {
        // Hand-derived: tag = field << 3 | wire type.
        var push = Goim_Comet_PushMsgReq()
        push.keys = ["a"]
        push.protoOp = 1000
        push.proto = Goim_Protocol_Proto(operation: 9, body: [])
        // keys (1, len) "a"; proto (2, len) {ver 1, op 9}; protoOp (3, varint) 1000
        #expect(Self.hex(try push.serializedData()) == "0a0161" + "120408011009" + "18e807")

        var broadcast = Goim_Comet_BroadcastReq()
        broadcast.protoOp = 1000
        broadcast.speed = 7
        #expect(Self.hex(try broadcast.serializedData()) == "08e807" + "1807")

        var rooms = Goim_Comet_RoomsReply()
        rooms.rooms = ["r": true]
        #expect(Self.hex(try rooms.serializedData()) == "0a05" + "0a0172" + "1001")

        var connect = Goim_Logic_ConnectReply()
        connect.mid = 123
        connect.key = "k"
        connect.roomID = "r"
        connect.accepts = [1000, 1001]
        connect.heartbeat = 480_000_000_000
        // accepts packed (4, len); heartbeat (5, varint) in nanoseconds
        #expect(Self.hex(try connect.serializedData())
            == "087b" + "12016b" + "1a0172" + "2204e807e907" + "288080eb91fc0d")

        var online = Goim_Logic_OnlineReq()
        online.server = "c"
        online.roomCount = ["r": 3]
        #expect(Self.hex(try online.serializedData()) == "0a0163" + "1205" + "0a0172" + "1003")

        var nodes = Goim_Logic_NodesReply()
        nodes.domain = "d"
        nodes.tcpPort = 3101
        nodes.wsPort = 3102
        nodes.wssPort = 3103
        nodes.heartbeat = 240
        nodes.nodes = ["n"]
        var backoff = Goim_Logic_Backoff()
        backoff.maxDelay = 300
        backoff.baseDelay = 3
        backoff.factor = 1.5
        backoff.jitter = 0.5
        nodes.backoff = backoff
        nodes.heartbeatMax = 2
        #expect(Self.hex(try nodes.serializedData())
            == "0a0164" + "109d18" + "189e18" + "209f18" + "28f001" + "32016e"
            + "3a0f" + "08ac02" + "1003" + "1d0000c03f" + "250000003f" + "4002")
    }

    @Test func methodPathsAreGoims() {
        #expect(Goim_Comet_Comet.Method.PushMsg.descriptor.fullyQualifiedMethod == "goim.comet.Comet/PushMsg")
        #expect(Goim_Comet_Comet.Method.BroadcastRoom.descriptor.fullyQualifiedMethod == "goim.comet.Comet/BroadcastRoom")
        #expect(Goim_Logic_Logic.Method.RenewOnline.descriptor.fullyQualifiedMethod == "goim.logic.Logic/RenewOnline")
        #expect(Goim_Logic_Logic.Method.Connect.descriptor.fullyQualifiedMethod == "goim.logic.Logic/Connect")
    }

    /// The same messages encoded by protoc itself from the .proto text.
    @Test func protocEncodesTheSameBytes() throws {
        guard let protoc = ["/usr/bin/protoc", "/usr/local/bin/protoc"].first(where: FileManager.default.isExecutableFile) else {
            Issue.record("protoc is not installed (apt-get install -y protobuf-compiler)")
            return
        }
        let protos = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protos")
        func encode(_ type: String, _ file: String, _ text: String) throws -> Data {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: protoc)
            process.arguments = ["-I", protos.path, "--encode=\(type)", file]
            let input = Pipe()
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            input.fileHandleForWriting.write(Data(text.utf8))
            try input.fileHandleForWriting.close()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            return data
        }

        var push = Goim_Logic_PushMsg()
        push.type = .room
        push.operation = 1000
        push.room = "live://1000"
        push.msg = Data("hello".utf8)
        #expect(try encode("goim.logic.PushMsg", "logic.proto",
                           #"type: ROOM operation: 1000 room: "live://1000" msg: "hello""#) == push.serializedData())

        var connect = Goim_Logic_ConnectReply()
        connect.mid = 123
        connect.key = "key-1"
        connect.roomID = "live://1000"
        connect.accepts = [1000, 1001, 1002]
        connect.heartbeat = 480_000_000_000
        #expect(try encode("goim.logic.ConnectReply", "logic.proto",
                           #"mid: 123 key: "key-1" roomID: "live://1000" accepts: [1000, 1001, 1002] heartbeat: 480000000000"#)
            == connect.serializedData())

        var room = Goim_Comet_BroadcastRoomReq()
        room.roomID = "test://1"
        room.proto = Goim_Protocol_Proto(operation: 9, body: [1, 2, 3])
        #expect(try encode("goim.comet.BroadcastRoomReq", "comet.proto",
                           #"roomID: "test://1" proto { ver: 1 op: 9 body: "\001\002\003" }"#) == room.serializedData())

        var online = Goim_Logic_OnlineReply()
        online.allRoomCount = ["live://1000": 42]
        #expect(try encode("goim.logic.OnlineReply", "logic.proto",
                           #"allRoomCount { key: "live://1000" value: 42 }"#) == online.serializedData())
    }
}
