import Foundation
import GoIMRPC
import TestLogic
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
private let systemSend = Glibc.send
private let systemClose = Glibc.close
#elseif canImport(Darwin)
import Darwin
private let systemSend = Darwin.send
private let systemClose = Darwin.close
#endif

@testable import Comet

extension CometSuite {
    /// job acks a push to JetStream once the comet's RPC returned: the reply must mean "handed to the sockets".
    /// On loopback a byte the comet wrote is in the client's receive queue when `send(2)` returns, so right after the
    /// RPC returns a non-blocking read must find the whole push, with no waiting.
    @Suite("Push RPCs reply after the bytes were written")
    struct PushAckTests {
        @Test("PushMsg, Broadcast and BroadcastRoom: the push is readable the moment the RPC returns", arguments: 0..<3)
        func writtenBeforeReply(kind: Int) async throws {
            try await withComet(configure: { $0.eventLoopThreads = 4 }) { comet in
                let socket = try BlockingSocket(port: comet.tcpPort)
                defer { socket.close() }
                let authBody = Array(#"{"mid":7,"key":"ack-key","room_id":"live://ack","accepts":[1000]}"#.utf8)
                try socket.send(WireBytes.packet(operation: 7, sequence: 1, body: authBody))
                let reply = try socket.read(16)
                #expect(reply[11] == 8)  // op 8: authenticated
                let loop = try #require(comet.core.buckets.entry(for: "ack-key")?.eventLoop)
                for round in 0..<6 {
                    let body = "push-\(round)"
                    // Keep the client's event loop busy for a moment: a comet that replied before writing would
                    // reply now (unless gRPC shares that loop, one time in four) and the read below would find nothing.
                    if round.isMultiple(of: 2) { loop.execute { usleep(150_000) } }
                    let request = Envelope.proto(operation: 1000, bodies: [body])
                    switch kind {
                    case 0:
                        var push = Goim_Comet_PushMsgReq()
                        push.keys = ["ack-key"]
                        push.protoOp = 1000
                        push.proto = request
                        _ = try await comet.rpc.pushMsg(push)
                    case 1:
                        var broadcast = Goim_Comet_BroadcastReq()
                        broadcast.protoOp = 1000
                        broadcast.proto = request
                        _ = try await comet.rpc.broadcast(broadcast)
                    default:
                        var room = Goim_Comet_BroadcastRoomReq()
                        room.roomID = "live://ack"
                        room.proto = request
                        _ = try await comet.rpc.broadcastRoom(room)
                    }
                    // TCP clients get an op 9 envelope's inner packets: one packet of 16 + body bytes.
                    let available = socket.readNow(max: 4096)
                    #expect(available.count == 16 + body.utf8.count, "round \(round): \(available.count) bytes readable")
                }
            }
        }
    }
}

/// A plain blocking TCP client, so that "readable now" is the kernel's answer and nothing else's.
struct BlockingSocket {
    let descriptor: CInt

    init(port: Int) throws {
        descriptor = try LoopbackSocket.connect(port: port, receiveTimeout: 10)
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { systemSend(descriptor, $0.baseAddress! + offset, bytes.count - offset, 0) }
            guard sent > 0 else { throw TestFailure("send failed: errno \(errno)") }
            offset += sent
        }
    }

    /// Exactly `count` bytes, waiting up to the receive timeout.
    func read(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = bytes.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + offset, count - offset, 0) }
            guard got > 0 else { throw TestFailure("read failed after \(offset) bytes: errno \(errno)") }
            offset += got
        }
        return bytes
    }

    /// What the kernel holds for us right now, without waiting.
    func readNow(max: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max)
        let got = bytes.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress!, max, Int32(MSG_DONTWAIT)) }
        return got > 0 ? Array(bytes.prefix(got)) : []
    }

    func close() {
        _ = systemClose(descriptor)
    }
}
