import Foundation
import GoIMClient
import GoIMProtocol
import GoIMRPC
import NIOCore
import TestLogic
import TestSupport
import Testing

@testable import Comet

/// Every test starts its own comet on loopback ports; they run one at a time so timing-based checks stay calm on a
/// busy 2-core machine.
@Suite(.serialized, .timeLimit(.minutes(3)))
enum CometSuite {}

extension CometSuite {
    @Suite("Connections: auth, heartbeat, timeouts")
    struct ConnectionTests {
        @Test("TCP auth: op 8 echoes ver/seq with an empty body; Logic gets server id, token and no cookie")
        func tcpAuth() async throws {
            try await withComet { comet in
                let client = try await GoIMClient.connect(port: comet.tcpPort)
                let reply = try await client.auth(auth(mid: 7, key: "tcp-auth", room: "live://1"), version: 3, sequence: 42)
                #expect(reply.operation == .authReply)
                #expect(reply.version == 3)
                #expect(reply.sequence == 42)
                #expect(reply.body.readableBytes == 0)
                let connect = try #require(comet.logic.calls.connects.first)
                #expect(connect.server == "test-comet")
                #expect(connect.cookie == "")
                #expect(connect.body == auth(mid: 7, key: "tcp-auth", room: "live://1"))
                try await comet.waitForStatistics { $0.connections == 1 && $0.rooms == 1 }
                await client.close()
            }
        }

        @Test("golden bytes: auth reply, heartbeat reply, pushed inner packet (reference §2.10)")
        func goldenBytes() async throws {
            try await withComet { comet in
                let raw = try await RawClient.connect(port: comet.tcpPort)
                let body = Array(#"{"mid":123,"key":"golden","room_id":"live://1000","platform":"web","accepts":[1000,1001,1002]}"#.utf8)
                var header = ByteBuffer()
                header.writePacketHeader(operation: .auth, version: 1, sequence: 1, bodyLength: body.count)
                try await raw.send(Array(header.readableBytesView) + body)
                #expect(try await raw.read(16).hex == "00000010001000010000000800000001")

                try await raw.send(hex: "00000010 0010 0001 00000002 00000001")
                #expect(try await raw.read(20).hex == "0000001400100001000000030000000100000001")

                // Job's envelope from Appendix A.2: TCP receives only the inner packet.
                var request = Goim_Comet_BroadcastRoomReq()
                request.roomID = "live://1000"
                request.proto = Envelope.proto(operation: 1000, bodies: ["hello"])
                let serialized: [UInt8] = try request.serializedBytes()
                #expect(serialized.hex
                    == "0a0b6c6976653a2f2f31303030121b0801100922150000001500100001000003e80000000068656c6c6f")
                _ = try await comet.rpc.broadcastRoom(request)
                #expect(try await raw.read(21).hex == "00000015001000010000" + "03e8" + "0000000068656c6c6f")
                await raw.close()
            }
        }

        @Test("auth failure (invalid JSON): the socket closes with nothing sent, no Disconnect")
        func authFailure() async throws {
            try await withComet(afterShutdown: { logic in
                #expect(logic.calls.disconnects.isEmpty)
            }) { comet in
                let raw = try await RawClient.connect(port: comet.tcpPort)
                let body = Array("{not json".utf8)
                var header = ByteBuffer()
                header.writePacketHeader(operation: .auth, version: 1, sequence: 1, bodyLength: body.count)
                try await raw.send(Array(header.readableBytesView) + body)
                try await raw.waitUntilClosed()
                #expect(raw.received.isEmpty)
                #expect(comet.logic.calls.failedConnects == 1)
                try await comet.waitForStatistics { $0.authFailures == 1 && $0.openConnections == 0 }

                // A wrongly typed field fails the same way.
                let typed = try await GoIMClient.connect(port: comet.tcpPort)
                await #expect(throws: GoIMClientError.self) {
                    try await typed.auth(token: ByteBuffer(string: #"{"mid":"123"}"#))
                }
                try await typed.waitUntilClosed()
            }
        }

        @Test("heartbeat: op 3 echoes ver/seq with the room's online count; 0 outside rooms")
        func heartbeatReply() async throws {
            try await withComet { comet in
                let a = try await comet.client(auth: auth(mid: 1, key: "hb-a", room: "live://hb"))
                let reply = try await a.request(
                    Packet(version: 5, operation: .heartbeat, sequence: 77, body: ByteBuffer(string: "ignored")),
                    replyOperation: .heartbeatReply)
                #expect(reply.version == 5)
                #expect(reply.sequence == 77)
                #expect(HeartbeatReply.online(in: reply.body) == 1)

                let b = try await comet.client(.webSocket(), auth: auth(mid: 2, key: "hb-b", room: "live://hb"))
                #expect(try await a.heartbeat() == 2)
                #expect(try await b.heartbeat() == 2)

                let loner = try await comet.client(auth: auth(mid: 3, key: "hb-c"))
                #expect(try await loner.heartbeat() == 0)
                await a.close()
                await b.close()
                await loner.close()
            }
        }

        @Test("a client that asks (\"return_key\": true) gets its server-generated key in op 8 and can be pushed to by it; goim's clients get an empty op 8")
        func returnKey() async throws {
            try await withComet { comet in
                let asking = try await GoIMClient.connect(port: comet.tcpPort, transport: .tcp)
                let reply = try await asking.auth(
                    token: ByteBuffer(string: #"{"mid":7,"room_id":"live://k","accepts":[1000],"return_key":true}"#))
                #expect(reply.operation == .authReply)
                let text = String(buffer: reply.body)
                let key = try #require(text.wholeMatch(of: /\{"key":"([0-9a-f-]{36})"\}/)?.1)
                try await comet.pushKeys([String(key)], body: "by-key")
                #expect(String(buffer: try await asking.receive(1)[0].packet.body) == "by-key")

                let plain = try await GoIMClient.connect(port: comet.wsPort, transport: .webSocket())
                let goimReply = try await plain.auth(auth(mid: 8, key: ""))
                #expect(goimReply.body.readableBytes == 0)
                await asking.close()
                await plain.close()
            }
        }

        @Test("heartbeat timeout closes the connection and calls Disconnect exactly once")
        func heartbeatTimeout() async throws {
            let logic = TestLogic(heartbeat: { key in key == "short" ? 300_000_000 : 480_000_000_000 })
            try await withComet(logic: logic, afterShutdown: { logic in
                #expect(logic.calls.disconnects(of: "short") == 1)
                #expect(logic.calls.disconnects(of: "kept") == 1)  // at shutdown
            }) { comet in
                // Taken before the auth: the comet arms the 300 ms deadline after this instant, so the close cannot
                // come sooner than 300 ms from here (taken after the second client's auth it flaked under load).
                let started = ContinuousClock.now
                let short = try await comet.client(auth: auth(mid: 11, key: "short", room: "live://t"))
                let kept = try await comet.client(auth: auth(mid: 12, key: "kept", room: "live://t"))
                // Other traffic does not keep it alive: only op 2 re-arms the timeout (goim).
                _ = try await short.request(Packet(operation: .sub, body: ByteBuffer(string: "1001")), replyOperation: .subReply)
                try await short.waitUntilClosed(timeout: .seconds(5))
                #expect(ContinuousClock.now - started >= .milliseconds(250))
                try await comet.logic.wait { $0.disconnects(of: "short") == 1 }
                let disconnect = try #require(comet.logic.calls.disconnects.first)
                #expect(disconnect == .init(mid: 11, key: "short", server: "test-comet"))
                try await comet.waitForStatistics { $0.heartbeatTimeouts == 1 }
                #expect(try await kept.heartbeat() == 1)
            }
        }

        @Test("heartbeats keep a connection with a short timeout alive")
        func heartbeatsKeepAlive() async throws {
            let logic = TestLogic(heartbeat: { _ in 700_000_000 })
            try await withComet(logic: logic) { comet in
                let client = try await comet.client(auth: auth(key: "alive"))
                for sequence in 1...12 {
                    try await Task.sleep(for: .milliseconds(100))
                    try await client.heartbeat(sequence: Int32(sequence))
                }
                #expect(client.isActive)
                #expect(await comet.statistics().heartbeatTimeouts == 0)
            }
        }

        @Test("handshake timeout: no auth in time closes the socket; packets before auth are ignored")
        func handshakeTimeout() async throws {
            try await withComet(configure: { $0.proto.handshakeTimeout = .milliseconds(300) }) { comet in
                let raw = try await RawClient.connect(port: comet.tcpPort)
                try await raw.send(hex: "00000010 0010 0001 00000002 00000001")  // heartbeat before auth: ignored
                try await raw.waitUntilClosed(timeout: .seconds(5))
                #expect(raw.received.isEmpty)
                let stats = await comet.statistics()
                #expect(stats.handshakeTimeouts == 1)
                #expect(stats.ignoredBeforeAuth == 1)
                #expect(comet.logic.calls.connects.isEmpty)
            }
        }

        @Test("packets before auth are ignored, then auth works on the same connection")
        func ignoredBeforeAuth() async throws {
            try await withComet { comet in
                let client = try await GoIMClient.connect(port: comet.tcpPort)
                try await client.send(Packet(operation: .heartbeat, sequence: 1))
                try await client.send(Packet(operation: .changeRoom, sequence: 2, body: ByteBuffer(string: "live://x")))
                try await client.auth(auth(key: "late"))
                #expect(try await client.heartbeat(sequence: 3) == 0)
                #expect(await comet.statistics().ignoredBeforeAuth == 2)
            }
        }

        @Test("other ops go to Logic Receive and are echoed with an empty body; packets pipelined after auth are answered in order")
        func receiveForwarding() async throws {
            try await withComet { comet in
                let client = try await GoIMClient.connect(port: comet.tcpPort)
                // Auth, then at once two more packets in the same write: they wait for Connect and are answered in order.
                var bytes = ByteBuffer()
                bytes.writePacket(Packet(operation: .auth, sequence: 1, body: ByteBuffer(bytes: auth(mid: 9, key: "recv").encoded())))
                bytes.writePacket(Packet(version: 2, operation: 4, sequence: 2, body: ByteBuffer(string: "up")))
                bytes.writePacket(Packet(operation: 1000, sequence: 3, body: ByteBuffer(string: "biz")))
                try await client.sendRaw(bytes)
                let replies = try await client.receive(3)
                #expect(replies.map(\.packet.operation) == [.authReply, Operation(4), Operation(1000)])
                #expect(replies.map(\.packet.sequence) == [1, 2, 3])
                #expect(replies[1].packet.version == 2)
                #expect(replies.allSatisfy { $0.packet.body.readableBytes == 0 })
                try await comet.logic.wait { $0.receives.count == 2 }
                let receives = comet.logic.calls.receives.sorted { $0.proto.seq < $1.proto.seq }
                #expect(receives[0].mid == 9)
                #expect(receives[0].proto.op == 4)
                #expect(receives[0].proto.ver == 2)
                #expect(receives[0].proto.body == Data("up".utf8))
                #expect(receives[1].proto.op == 1000)
            }
        }

        @Test("Redis lost the sessions: every connection calls Logic Heartbeat at its next heartbeat, long before its session refresh; a failed call is tried again after about a second, then not until the next refresh")
        func sessionsWrittenAgain() async throws {
            try await withComet(configure: {
                $0.proto.sessionRewriteSpread = .zero  // the default session refresh (10–20 min) stays
            }) { comet in
                let client = try await comet.client(auth: auth(mid: 6, key: "rewrite"))
                try await client.heartbeat()
                #expect(comet.logic.calls.heartbeats.isEmpty)
                // The registry refresh found the comet's record gone; the first call fails (Redis still away).
                comet.logic.failingHeartbeats.withLock { $0 = 1 }
                comet.comet.comet.rewriteSessions()
                try await client.heartbeat()
                try await comet.logic.wait { $0.heartbeats.count == 1 }
                let failedAt = ContinuousClock.now
                try await waitUntilAsync {
                    _ = try? await client.heartbeat()
                    return comet.logic.calls.heartbeats.count >= 2
                }
                // Retried after 0.5–1 s (1 s backoff, jittered), at a client heartbeat; it succeeds.
                #expect(ContinuousClock.now - failedAt >= .milliseconds(400))
                #expect(ContinuousClock.now - failedAt < .seconds(5))
                for _ in 0..<10 {
                    try await client.heartbeat()
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(comet.logic.calls.heartbeats.count == 2, "after a success, the next call waits for the session refresh")
                #expect(comet.logic.calls.heartbeats.allSatisfy { $0 == .init(mid: 6, key: "rewrite", server: "test-comet") })
            }
        }

        @Test("Logic Heartbeat is called once the session refresh interval has passed")
        func sessionRefresh() async throws {
            try await withComet(configure: {
                $0.proto.sessionRefreshMin = .seconds(1)
                $0.proto.sessionRefreshMax = .seconds(1)
            }) { comet in
                let started = ContinuousClock.now  // before the auth, which starts the interval
                let client = try await comet.client(auth: auth(mid: 5, key: "refresh"))
                try await client.heartbeat()
                #expect(comet.logic.calls.heartbeats.isEmpty)
                // Heartbeat until Logic Heartbeat comes (no fixed sleep), then check it did not come too early.
                try await waitUntilAsync {
                    _ = try? await client.heartbeat()
                    return !comet.logic.calls.heartbeats.isEmpty
                }
                #expect(ContinuousClock.now - started >= .seconds(1))
                try await client.heartbeat()
                try await comet.logic.wait { $0.heartbeats.count == 1 }
                #expect(comet.logic.calls.heartbeats.first == .init(mid: 5, key: "refresh", server: "test-comet"))
            }
        }
    }
}
