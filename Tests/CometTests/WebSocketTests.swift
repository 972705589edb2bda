import Foundation
import GoIMClient
import GoIMProtocol
import GoIMRPC
import NIOCore
import NIOHTTP1
import NIOSSL
import TestLogic
import TestSupport
import Testing

@testable import Comet

extension CometSuite {
    @Suite("WebSocket and WebSocket over TLS")
    struct WebSocketTests {
        @Test("WebSocket auth passes the Cookie header to Logic; pushes arrive as one op 9 envelope frame")
        func webSocketAuthAndCookie() async throws {
            try await withComet { comet in
                var headers = HTTPHeaders()
                headers.add(name: "Cookie", value: "session=abc")
                let client = try await comet.client(.webSocket(headers: headers), auth: auth(mid: 3, key: "ws-1", room: "live://ws"))
                #expect(comet.logic.calls.connects.first?.cookie == "session=abc")
                try await comet.broadcastRoom("live://ws", body: "hello")
                let received = try await client.receive()
                #expect(received[0].inEnvelope)
                #expect(String(buffer: received[0].packet.body) == "hello")
            }
        }

        @Test("raw WebSocket bytes: 101 response, unmasked binary frames, op 9 envelope with a 16-byte outer header")
        func webSocketGoldenBytes() async throws {
            try await withComet { comet in
                let raw = try await RawClient.connect(port: comet.wsPort)
                try await raw.send(Array((
                    "GET /sub HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8))
                var response = ""
                while !response.hasSuffix("\r\n\r\n") {
                    response += String(decoding: try await raw.read(1), as: UTF8.self)
                }
                #expect(response.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
                #expect(response.lowercased().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"))
                #expect(response.lowercased().contains("upgrade: websocket\r\n"))

                // A masked client frame carrying the auth packet.
                var packet = ByteBuffer()
                packet.writePacket(Packet(operation: .auth, sequence: 1, body: ByteBuffer(bytes: auth(key: "raw-ws", room: "live://1000").encoded())))
                try await raw.send(maskedFrame(Array(packet.readableBytesView)))
                #expect(try await raw.read(18).hex == "8210" + "00000010001000010000000800000001")

                try await raw.send(maskedFrame(Array(hexBytes: "00000010 0010 0001 00000002 00000001")))
                #expect(try await raw.read(22).hex == "8214" + "0000001400100001000000030000000100000001")

                try await comet.broadcastRoom("live://1000", body: "hello")
                #expect(try await raw.read(39).hex
                    == "8225" + "00000025001000010000000900000000" + "00000015001000010000" + "03e8" + "0000000068656c6c6f")
                await raw.close()
            }
        }

        @Test("the upgrade needs GET /sub (a query string is accepted); other paths are closed without a response")
        func upgradePath() async throws {
            try await withComet { comet in
                let withQuery = try await GoIMClient.connect(port: comet.wsPort, transport: .webSocket(path: "/sub?token=1"))
                try await withQuery.auth(auth(key: "query"))
                await #expect(throws: GoIMClientError.upgradeRefused) {
                    _ = try await GoIMClient.connect(port: comet.wsPort, transport: .webSocket(path: "/other"))
                }
                let raw = try await RawClient.connect(port: comet.wsPort)
                try await raw.send(Array("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
                try await raw.waitUntilClosed()
                #expect(raw.received.isEmpty)
            }
        }

        @Test("Ping is answered with a Pong at once; Close is answered with a Close and the connection ends with one Disconnect")
        func pingAndClose() async throws {
            try await withComet(afterShutdown: { logic in
                #expect(logic.calls.disconnects(of: "pinger") == 1)
            }) { comet in
                let client = try await comet.client(.webSocket(), auth: auth(key: "pinger"))
                let pong = try await client.ping(ByteBuffer(string: "are you there"))
                #expect(String(buffer: pong) == "are you there")
                let code = try await client.closeHandshake(code: 1001)
                #expect(code == 1001)
                try await comet.logic.wait { $0.disconnects(of: "pinger") == 1 }
            }
        }

        @Test("after the client's Close the comet sends only the echoing Close, while pushes keep coming, then closes (RFC 6455)")
        func closeIsTheLastFrame() async throws {
            try await withComet { comet in
                let room = "live://ws-close"
                let raw = try await RawClient.connect(port: comet.wsPort)
                try await raw.upgradeToWebSocket()
                let authReply = try await raw.authenticate(auth(key: "ws-close", room: room), webSocket: true)
                #expect(authReply == WireBytes.serverFrame(WireBytes.packet(operation: 8, sequence: 1)))
                try await comet.broadcastRoom(room, body: "first")
                let first = WireBytes.roomPush(body: Array("first".utf8)).webSocket
                #expect(try await raw.read(first.count) == first)  // written directly from here on
                let pusher = Task {
                    for index in 0..<400 where !Task.isCancelled {
                        try await comet.broadcastRoom(room, body: "p\(index)")
                    }
                }
                try await waitUntil { raw.received.count > 0 }  // pushes are flowing
                // A heartbeat, the Close, another heartbeat, in one write: the first may be answered, nothing after
                // the Close frame is.
                try await raw.send(
                    WireBytes.clientFrame(WireBytes.packet(operation: 2, sequence: 5))
                        + WireBytes.clientFrame(opcode: 0x8, [0x03, 0xE8])
                        + WireBytes.clientFrame(WireBytes.packet(operation: 2, sequence: 6)))
                try await raw.waitUntilClosed()
                pusher.cancel()
                _ = try? await pusher.value

                let frames = try WireBytes.serverFrames(raw.received)
                #expect(frames.last?.opcode == 0x8)
                #expect(frames.last?.payload == [0x03, 0xE8])
                var next = 0
                for frame in frames.dropLast() {
                    #expect(frame.opcode == 0x2)
                    if frame.payload == WireBytes.packet(operation: 3, sequence: 5, body: [0, 0, 0, 1]) { continue }
                    // Otherwise the next push, byte for byte.
                    #expect(frame.payload == WireBytes.packet(operation: 9, body: WireBytes.roomPush(body: Array("p\(next)".utf8)).tcp))
                    next += 1
                }
                #expect(next > 0)
                try await comet.logic.wait { $0.disconnects(of: "ws-close") == 1 }
            }
        }

        @Test("WebSocket over TLS: handshake, auth and push")
        func webSocketTLS() async throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("comet-tls-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let (certificate, key) = try makeSelfSignedCertificate(in: directory, name: "comet.test")
            let (otherCertificate, otherKey) = try makeSelfSignedCertificate(in: directory, name: "other.test")
            try await withComet(configure: {
                $0.websocket.tlsOpen = true
                $0.websocket.certFile = [otherCertificate, certificate]
                $0.websocket.privateFile = [otherKey, key]
            }) { comet in
                #expect(comet.addresses.webSocketTLS.count == 1)
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.trustRoots = .file(certificate)
                let context = try NIOSSLContext(configuration: tls)
                // SNI picks the certificate for comet.test (verification would fail with the default other.test).
                let client = try await comet.client(
                    .webSocketTLS(context: context, serverHostname: "comet.test"), auth: auth(key: "secure", room: "live://tls"))
                try await comet.broadcastRoom("live://tls", body: "over tls")
                let received = try await client.receive()
                #expect(received[0].inEnvelope)
                #expect(String(buffer: received[0].packet.body) == "over tls")
                #expect(try await client.heartbeat() == 1)
            }
        }
    }
}

/// A client frame: FIN + binary, masked (payload < 126 bytes or < 65536).
func maskedFrame(_ payload: [UInt8]) -> [UInt8] {
    let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
    var frame: [UInt8] = [0x82]
    if payload.count < 126 {
        frame.append(0x80 | UInt8(payload.count))
    } else {
        frame.append(0x80 | 126)
        frame.append(UInt8(payload.count >> 8))
        frame.append(UInt8(payload.count & 0xff))
    }
    frame += mask
    for (index, byte) in payload.enumerated() { frame.append(byte ^ mask[index % 4]) }
    return frame
}

/// A self-signed certificate for `name` made with the openssl CLI; returns the PEM paths.
func makeSelfSignedCertificate(in directory: URL, name: String) throws -> (certificate: String, key: String) {
    let certificate = directory.appendingPathComponent("\(name).pem").path
    let key = directory.appendingPathComponent("\(name).key").path
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=\(name)",
        "-addext", "subjectAltName=DNS:\(name)", "-keyout", key, "-out", certificate,
    ]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw TestFailure("openssl failed with status \(process.terminationStatus)") }
    return (certificate, key)
}
