import Foundation
import GRPCCore
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOWebSocket
import Synchronization
import TestLogic
import TestSupport
import LogicClient
import Testing

@testable import Comet

/// A Logic in the same process, for handler tests without sockets: records calls, can hold `Connect` until released
/// or fail it.
final class StubLogic: LogicAPI {
    struct Calls: Sendable {
        var connects: [AuthBody] = []
        var disconnects: [String] = []
        var heartbeats: [String] = []
        var receives: [Goim_Protocol_Proto] = []
    }

    private let state = Mutex<(calls: Calls, held: Bool, waiting: [CheckedContinuation<Void, Never>])>((Calls(), false, []))
    let heartbeatNanoseconds: Int64
    let failConnect: Bool
    /// `ConnectReply.expires_at` (Unix seconds, 0 = never).
    let expiresAt: Int64
    /// What `refreshToken` answers: a token's expiry for `"good-<seconds from now>"` bodies, UNAUTHENTICATED otherwise.
    private let refreshes = Mutex<[String]>([])

    init(heartbeatNanoseconds: Int64 = 60_000_000_000, failConnect: Bool = false, holdConnect: Bool = false, expiresAt: Int64 = 0) {
        self.heartbeatNanoseconds = heartbeatNanoseconds
        self.failConnect = failConnect
        self.expiresAt = expiresAt
        state.withLock { $0.held = holdConnect }
    }

    var refreshedTokens: [String] { refreshes.withLock { $0 } }

    func refreshToken(mid: Int64, key: String, server: String, token: Data) async throws -> Int64 {
        let text = String(decoding: token, as: UTF8.self)
        refreshes.withLock { $0.append(text) }
        guard text.hasPrefix("good-"), let seconds = Int64(text.dropFirst(5)) else {
            throw RPCError(code: .unauthenticated, message: "authentication failed: JWT signature is invalid")
        }
        return Int64(Date().timeIntervalSince1970) + seconds
    }

    var calls: Calls { state.withLock { $0.calls } }

    /// Lets held `Connect`s answer.
    func release() {
        let waiting = state.withLock { state in
            state.held = false
            defer { state.waiting = [] }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
    }

    func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply {
        let body = try AuthBody.decode(Array(token))
        await withCheckedContinuation { continuation in
            let held = state.withLock { state in
                state.calls.connects.append(body)
                if state.held { state.waiting.append(continuation) }
                return state.held
            }
            if !held { continuation.resume() }
        }
        if failConnect { throw TestFailure("no such token") }
        var reply = Goim_Logic_ConnectReply()
        reply.mid = body.mid
        reply.key = body.key
        reply.roomID = body.roomID
        reply.accepts = body.accepts
        reply.heartbeat = heartbeatNanoseconds
        reply.expiresAt = expiresAt
        return reply
    }

    func disconnect(mid: Int64, key: String, server: String) async throws {
        state.withLock { $0.calls.disconnects.append(key) }
    }

    func heartbeat(mid: Int64, key: String, server: String) async throws {
        state.withLock { $0.calls.heartbeats.append(key) }
    }

    func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32] { [:] }

    func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws {
        state.withLock { $0.calls.receives.append(proto) }
    }
}

/// Sits at the head of a test pipeline like a socket whose peer does not read: keeps every write (in order) and never
/// completes it.
final class StalledSocket: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var written: [[UInt8]] = []
    private var promises: [EventLoopPromise<Void>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        written.append(Array(unwrapOutboundIn(data).readableBytesView))
        if let promise { promises.append(promise) }
    }

    func flush(context: ChannelHandlerContext) {}

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        for promise in promises { promise.fail(ChannelError.ioOnClosedChannel) }
        promises = []
        context.close(mode: mode, promise: promise)
    }
}

/// At the head of a test pipeline: records the connection's direct-write descriptor at the moment a close reaches it
/// (that is, where NIO's socket would be closed).
final class CloseProbe: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var handler: ConnectionHandler?
    var descriptorsAtClose: [CInt] = []

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        descriptorsAtClose.append(handler?.directDescriptor ?? -100)
        context.close(mode: mode, promise: promise)
    }
}

/// One `ConnectionHandler` on a `NIOAsyncTestingChannel` (its Logic results hop back to the channel's loop from other
/// threads, which `EmbeddedChannel` does not allow), with the comet's real pipeline behind it: `PacketDecoder` on TCP,
/// the output gate and `WebSocketAdapter` on WebSocket (frames are written in as `WebSocketFrame`s).
struct HandlerUnit: Sendable {
    final class Parts {
        let handler: ConnectionHandler
        let loop: LoopState
        let stalled: StalledSocket?
        let probe: CloseProbe

        init(handler: ConnectionHandler, loop: LoopState, stalled: StalledSocket?, probe: CloseProbe) {
            self.handler = handler
            self.loop = loop
            self.stalled = stalled
            self.probe = probe
        }
    }

    let comet: Comet
    let logic: StubLogic
    let channel: NIOAsyncTestingChannel
    let parts: NIOLoopBound<Parts>
    let transport: TransportKind

    static let fakeDescriptor: CInt = 999_999  // never an open descriptor: a stray send would fail with EBADF

    static func make(
        _ transport: TransportKind, logic: StubLogic = StubLogic(), stalled: Bool = false,
        configure: (inout CometConfiguration) -> Void = { _ in }
    ) async throws -> HandlerUnit {
        var configuration = CometConfiguration()
        configuration.env.host = "unit-comet"
        configuration.proto.handshakeTimeout = .seconds(5)
        configure(&configuration)
        let comet = try Comet(
            configuration: configuration, group: .singleton, logic: logic, logger: testLogger, sweepInterval: .seconds(1),
            disconnectConcurrency: 8)
        let channel = NIOAsyncTestingChannel()
        try await channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 40000)).get()
        let parts = try await channel.testingEventLoop.executeInContext {
            let loop = LoopState(eventLoop: channel.eventLoop, counters: comet.counters)
            let handler = try #require(comet.accept(channel, transport: transport, loop: loop))
            let operations = channel.pipeline.syncOperations
            let probe = CloseProbe()
            probe.handler = handler
            try operations.addHandler(probe)
            let stall = stalled ? StalledSocket() : nil
            if let stall { try operations.addHandler(stall) }
            switch transport {
            case .tcp:
                try operations.addHandler(ByteToMessageHandler(PacketDecoder(limits: comet.limits)))
                try operations.addHandler(handler)
            case .webSocket:
                let gate = OutputGate()
                try operations.addHandler(gate)
                handler.output = try operations.context(handler: gate)
                try operations.addHandler(WebSocketAdapter(limits: comet.limits, maxMessageSize: 8192))
                try operations.addHandler(handler)
            }
            return NIOLoopBound(Parts(handler: handler, loop: loop, stalled: stall, probe: probe), eventLoop: channel.eventLoop)
        }
        return HandlerUnit(comet: comet, logic: logic, channel: channel, parts: parts, transport: transport)
    }

    /// Runs `body` on the channel's event loop with the handler and its loop state, then what it left queued there.
    func onLoop<T: Sendable>(_ body: @escaping @Sendable (Parts) throws -> T) async throws -> T {
        let parts = self.parts
        let result = try await channel.testingEventLoop.executeInContext { try body(parts.value) }
        await settle()
        return result
    }

    /// Runs the tasks queued on the test loop (the close future's callbacks, where the handler's bookkeeping runs).
    func settle() async {
        await channel.testingEventLoop.run()
    }

    /// A client packet: raw bytes on TCP, one binary frame on WebSocket.
    func send(operation: Int32, version: Int16 = 1, sequence: Int32, body: [UInt8] = []) async throws {
        let bytes = WireBytes.packet(operation: operation, version: version, sequence: sequence, body: body)
        switch transport {
        case .tcp:
            try await channel.writeInbound(ByteBuffer(bytes: bytes))
            await settle()
        case .webSocket: try await sendFrame(.binary, bytes)
        }
    }

    func sendFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8]) async throws {
        try await channel.writeInbound(WebSocketFrame(fin: true, opcode: opcode, data: ByteBuffer(bytes: payload)))
        await settle()
    }

    /// What the server sends for `packet`: the packet on TCP, one binary frame holding it on WebSocket.
    func framed(_ packet: [UInt8]) -> [UInt8] {
        transport == .tcp ? packet : WireBytes.serverFrame(packet)
    }

    /// The next write that reached the channel (waits for it).
    func nextWrite(timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        var result: ByteBuffer?
        try await waitUntilAsync(timeout: timeout) {
            result = try? await channel.readOutbound(as: ByteBuffer.self)
            return result != nil
        }
        return Array(result!.readableBytesView)
    }

    /// Everything written so far and not yet read.
    func pendingWrites() async throws -> [[UInt8]] {
        var writes: [[UInt8]] = []
        while let buffer = try await channel.readOutbound(as: ByteBuffer.self) { writes.append(Array(buffer.readableBytesView)) }
        return writes
    }

    /// Authenticates (op 7 → op 8) and consumes the reply.
    func authenticate(_ body: AuthBody, sequence: Int32 = 1) async throws {
        try await send(operation: 7, sequence: sequence, body: body.encoded())
        #expect(try await nextWrite() == framed(WireBytes.packet(operation: 8, sequence: sequence)))
    }

    var isClosed: Bool { !channel.isActive }

    func finish() async {
        _ = try? await channel.finish(acceptAlreadyClosed: true)
    }
}

extension CometSuite {
    @Suite("ConnectionHandler and WebSocketAdapter on a test channel (no sockets)")
    struct HandlerTests {
        @Test("TCP auth: op 8 echoes ver and seq with no body; the connection is in its bucket and room; Logic got the token")
        func tcpAuth() async throws {
            let unit = try await HandlerUnit.make(.tcp)
            defer { Task { await unit.finish() } }
            let body = auth(mid: 7, key: "u-auth", room: "live://u")
            try await unit.send(operation: 7, version: 3, sequence: 42, body: body.encoded())
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 8, version: 3, sequence: 42))
            #expect(unit.logic.calls.connects == [body])
            #expect(unit.comet.buckets.entry(for: "u-auth") != nil)
            #expect(unit.comet.rooms.info(for: "live://u")?.reportedOnline == 1)
            #expect(try await unit.onLoop { $0.handler.state == .open })
        }

        @Test("heartbeat: op 3 carries the room's online count, ver/seq echoed; it re-arms the deadline")
        func heartbeat() async throws {
            let unit = try await HandlerUnit.make(.tcp, logic: StubLogic(heartbeatNanoseconds: 2_000_000_000))
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(key: "u-hb", room: "live://hb"))
            let before = try await unit.onLoop { $0.handler.deadline }
            try await unit.send(operation: 2, version: 5, sequence: 9)
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 3, version: 5, sequence: 9, body: [0, 0, 0, 1]))
            #expect(try await unit.onLoop { $0.handler.deadline } > before)
            // Not in a room: online 0.
            try await unit.send(operation: 12, sequence: 10)
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 13, sequence: 10))
            try await unit.send(operation: 2, sequence: 11)
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 3, sequence: 11, body: [0, 0, 0, 0]))
        }

        @Test("Sub and Unsub echo their bodies and change the watch set; ChangeRoom echoes and moves the connection")
        func subUnsubChangeRoom() async throws {
            let unit = try await HandlerUnit.make(.tcp)
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(key: "u-sub", room: "live://a", accepts: [1000]))
            try await unit.send(operation: 14, sequence: 2, body: Array("1001,1002".utf8))
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 15, sequence: 2, body: Array("1001,1002".utf8)))
            #expect(try await unit.onLoop { [$0.handler.watches(1000), $0.handler.watches(1001), $0.handler.watches(1002)] } == [true, true, true])
            try await unit.send(operation: 16, sequence: 3, body: Array("1001,1000".utf8))
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 17, sequence: 3, body: Array("1001,1000".utf8)))
            #expect(try await unit.onLoop { [$0.handler.watches(1000), $0.handler.watches(1001), $0.handler.watches(1002)] } == [false, false, true])

            try await unit.send(operation: 12, sequence: 4, body: Array("live://b".utf8))
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 13, sequence: 4, body: Array("live://b".utf8)))
            #expect(unit.comet.rooms.info(for: "live://a") == nil)
            #expect(unit.comet.rooms.info(for: "live://b")?.reportedOnline == 1)
            // A room push now reaches it (through NIO here: the test channel has no descriptor).
            let push = Push(proto: Envelope.proto(operation: 1000, bodies: ["to-b"]))
            try await unit.onLoop { $0.loop.broadcastRoom("live://b", push: push) }
            #expect(try await unit.nextWrite() == WireBytes.roomPush(body: Array("to-b".utf8)).tcp)
            // Other ops go to Logic and are echoed with an empty body.
            try await unit.send(operation: 4, version: 2, sequence: 5, body: Array("up".utf8))
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 4, version: 2, sequence: 5))
            try await waitUntil { unit.logic.calls.receives.count == 1 }
            #expect(unit.logic.calls.receives.first?.body == Data("up".utf8))
        }

        @Test("before auth packets are ignored and nothing is written; the handshake deadline closes silently")
        func handshakeTimeout() async throws {
            let unit = try await HandlerUnit.make(.tcp)
            defer { Task { await unit.finish() } }
            try await unit.send(operation: 2, sequence: 1)
            try await unit.send(operation: 12, sequence: 2, body: Array("live://x".utf8))
            #expect(try await unit.pendingWrites().isEmpty)
            #expect(unit.comet.counters.ignoredBeforeAuth.load(ordering: .relaxed) == 2)
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(4)) }
            #expect(!unit.isClosed)
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(6)) }
            #expect(unit.isClosed)
            #expect(try await unit.pendingWrites().isEmpty)
            #expect(unit.comet.counters.handshakeTimeouts.load(ordering: .relaxed) == 1)
            #expect(try await unit.onLoop { $0.loop.connections.isEmpty })
            #expect(unit.logic.calls.connects.isEmpty)
        }

        @Test("an authenticated connection is in its user's index (pushes to users with history) until it closes")
        func userIndex() async throws {
            let unit = try await HandlerUnit.make(.tcp, logic: StubLogic(heartbeatNanoseconds: 1_000_000_000))
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(mid: 42, key: "u-user", room: ""))
            let info = try #require(unit.comet.users.info(for: "42"))
            #expect(info.reportedOnline == 1)
            // A loop outside the comet's group (this test's) marks the top bit: "ask every loop".
            #expect(info.loops.load(ordering: .relaxed) == 1 << 63)
            #expect(LoopState.bit(forLoop: 0) == 1 && LoopState.bit(forLoop: 5) == 32 && LoopState.bit(forLoop: 70) == 1 << 63)
            #expect(unit.comet.rooms.counts().isEmpty, "users are not rooms")
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(2)) }
            #expect(unit.isClosed)
            try await waitUntil { unit.comet.users.info(for: "42") == nil }
        }

        @Test("heartbeat deadline: the sweep closes an authenticated connection and Logic gets Disconnect once")
        func heartbeatTimeout() async throws {
            let unit = try await HandlerUnit.make(.tcp, logic: StubLogic(heartbeatNanoseconds: 1_000_000_000))
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(key: "u-timeout", room: "live://t"))
            try await unit.onLoop { $0.loop.sweep(now: .now() + .milliseconds(500)) }
            #expect(!unit.isClosed)
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(2)) }
            #expect(unit.isClosed)
            try await waitUntil { unit.logic.calls.disconnects == ["u-timeout"] }
            #expect(unit.comet.counters.heartbeatTimeouts.load(ordering: .relaxed) == 1)
            #expect(unit.comet.buckets.entry(for: "u-timeout") == nil)
            #expect(unit.comet.rooms.info(for: "live://t") == nil)
            #expect(try await unit.pendingWrites().isEmpty)
        }

        @Test("credential expiry: the sweep closes the connection at expires_at (not before), counted apart from heartbeat timeouts")
        func credentialExpiry() async throws {
            let expiresAt = Int64(Date().timeIntervalSince1970) + 30
            let unit = try await HandlerUnit.make(.tcp, logic: StubLogic(heartbeatNanoseconds: 600_000_000_000, expiresAt: expiresAt))
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(mid: 5, key: "u-exp", room: "live://exp"))
            // The heartbeat deadline is 10 min away, the credential's 30 s: the deadline is the credential's.
            #expect(try await unit.onLoop { $0.handler.deadline } < .now() + .seconds(31))
            // A heartbeat does not push it past the expiry.
            try await unit.send(operation: 2, sequence: 2)
            _ = try await unit.nextWrite()
            #expect(try await unit.onLoop { $0.handler.deadline } < .now() + .seconds(31))
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(20)) }
            #expect(!unit.isClosed)
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(32)) }
            #expect(unit.isClosed)
            #expect(unit.comet.counters.credentialExpiries.load(ordering: .relaxed) == 1)
            #expect(unit.comet.counters.heartbeatTimeouts.load(ordering: .relaxed) == 0)
            try await waitUntil { unit.logic.calls.disconnects == ["u-exp"] }
        }

        @Test("an already expired credential closes the connection instead of op 8 and undoes the session")
        func credentialAlreadyExpired() async throws {
            let unit = try await HandlerUnit.make(.tcp, logic: StubLogic(expiresAt: Int64(Date().timeIntervalSince1970) - 5))
            defer { Task { await unit.finish() } }
            try await unit.send(operation: 7, sequence: 1, body: auth(mid: 5, key: "u-old").encoded())
            try await waitUntil { unit.isClosed }
            #expect(try await unit.pendingWrites().isEmpty)
            #expect(unit.comet.counters.credentialExpiries.load(ordering: .relaxed) == 1)
            try await waitUntil { unit.logic.calls.disconnects == ["u-old"] }
        }

        @Test("op 18 token refresh: op 19 says so (ver/seq echoed) and moves the expiry; a refused token leaves the old one")
        func tokenRefresh() async throws {
            let expiresAt = Int64(Date().timeIntervalSince1970) + 30
            let unit = try await HandlerUnit.make(.tcp, logic: StubLogic(heartbeatNanoseconds: 600_000_000_000, expiresAt: expiresAt))
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(mid: 5, key: "u-refresh"))
            try await unit.send(operation: 18, version: 2, sequence: 7, body: Array("good-300".utf8))
            let reply = try await unit.nextWrite()
            let header = Array(reply.prefix(16))
            #expect(header[8..<12] == [0, 0, 0, 19] && header[6..<8] == [0, 2] && header[12..<16] == [0, 0, 0, 7])
            let json = try #require(try JSONSerialization.jsonObject(with: Data(reply.dropFirst(16))) as? [String: Any])
            #expect(json["code"] as? Int == 0)
            let newExpiry = try #require(json["expires_at"] as? Int)
            #expect(abs(newExpiry - Int(Date().timeIntervalSince1970) - 300) <= 2)
            #expect(try await unit.onLoop { $0.handler.deadline } > .now() + .seconds(290))
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(60)) }
            #expect(!unit.isClosed)

            try await unit.send(operation: 18, sequence: 8, body: Array("forged".utf8))
            let refused = try await unit.nextWrite()
            #expect(refused[8..<12] == [0, 0, 0, 19])
            let error = try #require(try JSONSerialization.jsonObject(with: Data(refused.dropFirst(16))) as? [String: Any])
            #expect(error["code"] as? Int == -401)
            #expect((error["message"] as? String)?.contains("signature") == true)
            #expect(unit.logic.refreshedTokens == ["good-300", "forged"])
            #expect(unit.comet.counters.credentialRefreshes.load(ordering: .relaxed) == 1)
            #expect(unit.comet.counters.credentialRefreshFailures.load(ordering: .relaxed) == 1)
            // Still the accepted expiry (300 s), and op 18 is not forwarded to Logic's Receive.
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(310)) }
            #expect(unit.isClosed)
            #expect(unit.logic.calls.receives.isEmpty)
        }

        @Test("a failed auth closes with nothing written")
        func authFailure() async throws {
            let unit = try await HandlerUnit.make(.tcp, logic: StubLogic(failConnect: true))
            defer { Task { await unit.finish() } }
            try await unit.send(operation: 7, sequence: 1, body: auth(key: "u-bad").encoded())
            try await waitUntil { unit.isClosed }
            #expect(try await unit.pendingWrites().isEmpty)
            #expect(unit.comet.counters.authFailures.load(ordering: .relaxed) == 1)
            #expect(unit.logic.calls.disconnects.isEmpty)
        }

        @Test("packets sent while Logic Connect is in flight are answered after op 8, in order")
        func queuedWhileAuthenticating() async throws {
            let logic = StubLogic(holdConnect: true)
            let unit = try await HandlerUnit.make(.tcp, logic: logic)
            defer { Task { await unit.finish() } }
            try await unit.send(operation: 7, sequence: 1, body: auth(key: "u-queue", room: "live://q").encoded())
            try await unit.send(operation: 2, sequence: 2)
            try await unit.send(operation: 14, sequence: 3, body: Array("1001".utf8))
            try await waitUntil { logic.calls.connects.count == 1 }
            #expect(try await unit.pendingWrites().isEmpty)
            logic.release()
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 8, sequence: 1))
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 3, sequence: 2, body: [0, 0, 0, 1]))
            #expect(try await unit.nextWrite() == WireBytes.packet(operation: 15, sequence: 3, body: Array("1001".utf8)))
        }

        @Test("the peer's EOF (inputClosed) closes the connection and disconnects it at Logic")
        func peerEOF() async throws {
            let unit = try await HandlerUnit.make(.tcp)
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(key: "u-eof"))
            try await unit.channel.testingEventLoop.executeInContext {
                unit.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            }
            await unit.settle()
            #expect(unit.isClosed)
            try await waitUntil { unit.logic.calls.disconnects == ["u-eof"] }
        }

        /// Each way a connection can close stops direct writes before the close reaches the socket (the probe at
        /// the pipeline's head stands where NIO closes the descriptor).
        @Test("every close path forgets the descriptor before the close reaches the socket", arguments: ["server close", "channel close", "input closed", "read error", "protocol error", "WebSocket Close"])
        func closePathsForgetDescriptor(path: String) async throws {
            let unit = try await HandlerUnit.make(path == "WebSocket Close" ? .webSocket : .tcp)
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(key: "u-close"))
            try await unit.onLoop { $0.handler.directDescriptor = HandlerUnit.fakeDescriptor }
            switch path {
            case "server close":
                try await unit.onLoop { $0.handler.close(reason: "test") }
            case "channel close":
                try await unit.channel.close()
            case "input closed":
                try await unit.channel.testingEventLoop.executeInContext {
                    unit.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
                }
            case "read error":
                // NIO fires the error, then closes the socket itself (not through the pipeline): the descriptor must
                // already be gone when the event returns.
                let descriptor = try await unit.onLoop { parts -> CInt in
                    unit.channel.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read(descriptor:pointer:size:)"))
                    return parts.handler.directDescriptor
                }
                #expect(descriptor == -1)
            case "protocol error":
                try await unit.channel.writeInbound(ByteBuffer(bytes: Array(hexBytes: "00000010 0020 0001 00000002 00000001")))
            case "WebSocket Close":
                try await unit.sendFrame(.connectionClose, [0x03, 0xE8])
                #expect(try await unit.nextWrite() == [0x88, 0x02, 0x03, 0xE8])
            default:
                Issue.record("unknown path \(path)")
            }
            #expect(unit.isClosed)
            let seen = try await unit.onLoop { $0.probe.descriptorsAtClose }
            #expect(!seen.isEmpty && seen.allSatisfy { $0 == -1 }, "\(path): descriptor at close \(seen)")
        }

        @Test("WebSocket: op 8 and op 3 in binary frames; Ping gets a Pong at once; pushes are the encoded frame")
        func webSocketBasics() async throws {
            let unit = try await HandlerUnit.make(.webSocket)
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(key: "u-ws", room: "live://ws"))
            try await unit.send(operation: 2, sequence: 2)
            #expect(try await unit.nextWrite() == WireBytes.serverFrame(WireBytes.packet(operation: 3, sequence: 2, body: [0, 0, 0, 1])))
            try await unit.sendFrame(.ping, Array("hi".utf8))
            #expect(try await unit.nextWrite() == [0x8A, 0x02] + Array("hi".utf8))
            let push = Push(proto: Envelope.proto(operation: 1000, bodies: ["ws-push"]))
            try await unit.onLoop { $0.loop.broadcastRoom("live://ws", push: push) }
            #expect(try await unit.nextWrite() == WireBytes.roomPush(body: Array("ws-push".utf8)).webSocket)
        }

        @Test("WebSocketAdapter: a fragmented message is one packet; a reserved bit or an unknown opcode closes with nothing written", arguments: ["rsv1", "opcode"])
        func webSocketFraming(failure: String) async throws {
            let unit = try await HandlerUnit.make(.webSocket)
            defer { Task { await unit.finish() } }
            try await unit.authenticate(auth(key: "u-frag-\(failure)"))
            let heartbeat = WireBytes.packet(operation: 2, sequence: 3)
            for (index, part) in [heartbeat[0..<5], heartbeat[5..<11], heartbeat[11...]].enumerated() {
                let frame = WebSocketFrame(
                    fin: index == 2, opcode: index == 0 ? .binary : .continuation, data: ByteBuffer(bytes: Array(part)))
                try await unit.channel.writeInbound(frame)
            }
            await unit.settle()
            #expect(try await unit.nextWrite() == WireBytes.serverFrame(WireBytes.packet(operation: 3, sequence: 3, body: [0, 0, 0, 0])))
            let bad = failure == "rsv1"
                ? WebSocketFrame(fin: true, rsv1: true, opcode: .binary, data: ByteBuffer(bytes: heartbeat))
                : WebSocketFrame(fin: true, opcode: WebSocketOpcode(encodedWebSocketOpcode: 0x3)!, data: ByteBuffer(bytes: heartbeat))
            try await unit.channel.writeInbound(bad)
            await unit.settle()
            #expect(unit.isClosed)
            #expect(try await unit.pendingWrites().isEmpty)
            #expect(unit.comet.counters.protocolErrors.load(ordering: .relaxed) == 1)
            try await waitUntil { unit.logic.calls.disconnects == ["u-frag-\(failure)"] }
        }

        @Test("WebSocket Close: the echoing Close is the last frame written; later pushes, replies and pings get nothing")
        func webSocketCloseIsLast() async throws {
            // The client does not read: the Close frame stays queued, the connection stays open meanwhile.
            let unit = try await HandlerUnit.make(.webSocket, stalled: true)
            defer { Task { await unit.finish() } }
            try await unit.send(operation: 7, sequence: 1, body: auth(key: "u-wsclose", room: "live://wc").encoded())
            try await waitUntilAsync { (try? await unit.onLoop { $0.stalled!.written.count }) == 1 }
            try await unit.onLoop { $0.handler.directDescriptor = HandlerUnit.fakeDescriptor }
            try await unit.sendFrame(.connectionClose, [0x03, 0xE9])
            let push = Push(proto: Envelope.proto(operation: 1000, bodies: ["late"]))
            try await unit.onLoop { parts in
                parts.loop.broadcastRoom("live://wc", push: push)
                parts.handler.deliver(push)
            }
            try await unit.send(operation: 2, sequence: 2)
            try await unit.sendFrame(.ping, [1])
            let written = try await unit.onLoop { $0.stalled!.written }
            #expect(written == [WireBytes.serverFrame(WireBytes.packet(operation: 8, sequence: 1)), [0x88, 0x02, 0x03, 0xE9]])
            #expect(try await unit.onLoop { $0.handler.directDescriptor } == -1)
            #expect(!unit.isClosed)
            // A client that never takes the Close frame is closed by the sweep after the handshake timeout.
            try await unit.onLoop { $0.loop.sweep(now: .now() + .seconds(6)) }
            #expect(unit.isClosed)
            try await waitUntil { unit.logic.calls.disconnects == ["u-wsclose"] }
        }

        @Test("WebSocket Close while Logic Connect is in flight: op 8 is never written and the session is undone")
        func webSocketCloseDuringAuth() async throws {
            let logic = StubLogic(holdConnect: true)
            let unit = try await HandlerUnit.make(.webSocket, logic: logic, stalled: true)
            defer { Task { await unit.finish() } }
            try await unit.send(operation: 7, sequence: 1, body: auth(key: "u-wsauth").encoded())
            try await waitUntil { logic.calls.connects.count == 1 }
            try await unit.sendFrame(.connectionClose, [])
            logic.release()
            try await waitUntil { logic.calls.disconnects == ["u-wsauth"] }
            let written = try await unit.onLoop { $0.stalled!.written }
            #expect(written == [[0x88, 0x02, 0x03, 0xE8]])
            #expect(unit.comet.buckets.entry(for: "u-wsauth") == nil)
        }
    }
}
