import GoIMKit
import GoIMProtocol
import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing

@Suite("GoIMKit: addresses, backoff, heartbeats and reconnects against a scripted comet")
struct GoIMKitTests {
    @Test("comet URLs: schemes, goim's default ports, /sub, IPv6; bad ones are refused with the reason")
    func endpoints() throws {
        #expect(try GoIMEndpoint("tcp://example.com") == GoIMEndpoint(scheme: .tcp, host: "example.com", port: 3101))
        #expect(try GoIMEndpoint("ws://10.0.0.1") == GoIMEndpoint(scheme: .ws, host: "10.0.0.1", port: 3102, path: "/sub"))
        #expect(try GoIMEndpoint("wss://h:443/goim/sub") == GoIMEndpoint(scheme: .wss, host: "h", port: 443, path: "/goim/sub"))
        #expect(try GoIMEndpoint("WS://[::1]:4000/sub") == GoIMEndpoint(scheme: .ws, host: "::1", port: 4000))
        #expect(try GoIMEndpoint("ws://[::1]:4000/sub").description == "ws://[::1]:4000/sub")
        #expect(throws: GoIMKitError.badEndpoint("http://h", "expected tcp://, ws:// or wss://")) { try GoIMEndpoint("http://h") }
        #expect(throws: GoIMKitError.badEndpoint("tcp://h:99999", "bad port")) { try GoIMEndpoint("tcp://h:99999") }
        #expect(throws: GoIMKitError.badEndpoint("tcp://:3101", "no host")) { try GoIMEndpoint("tcp://:3101") }
        #expect(throws: GoIMKitError.noEndpoints) { try GoIMSession(GoIMConfiguration(endpoints: [], credentials: .token([]))) }
    }

    @Test("backoff: full jitter below min(max, base * 2^attempt)")
    func backoff() {
        let backoff = Backoff(base: .milliseconds(500), max: .seconds(15))
        #expect(backoff.delay(attempt: 0, random: 0) == .zero)
        #expect(backoff.delay(attempt: 0, random: 0.5) == .milliseconds(250))
        #expect(backoff.delay(attempt: 3, random: 0.5) == .seconds(2))
        #expect(backoff.delay(attempt: 10, random: 0.5) == .milliseconds(7500))
        #expect(backoff.delay(attempt: 1000, random: 0.999) < .seconds(15))
        for attempt in 0..<20 { #expect(backoff.delay(attempt: attempt) < .seconds(15)) }
    }

    @Test("a comet that stops answering heartbeats is noticed within one interval, and the session moves to the next address")
    func deadConnection() async throws {
        let silent = try await ScriptedComet.start(answersHeartbeats: false)
        let healthy = try await ScriptedComet.start(answersHeartbeats: true)
        var configuration = GoIMConfiguration(
            endpoints: [GoIMEndpoint(scheme: .tcp, host: "127.0.0.1", port: silent.port), GoIMEndpoint(scheme: .tcp, host: "127.0.0.1", port: healthy.port)],
            credentials: .authBody(AuthBody(mid: 1, roomID: "live://1")))
        configuration.heartbeat = .seconds(1)
        configuration.backoff = Backoff(base: .milliseconds(50), max: .milliseconds(100))
        let session = try GoIMSession(configuration)
        session.start()
        var states: [GoIMState] = []
        let clock = ContinuousClock()
        var connectedAt: ContinuousClock.Instant?
        var lostAfter: Duration?
        for await state in session.states {
            states.append(state)
            if case .connected = state, connectedAt == nil { connectedAt = clock.now }
            if case .disconnected(let reason, _) = state, lostAfter == nil {
                #expect(reason == "missed heartbeat reply")
                lostAfter = clock.now - connectedAt!
            }
            if case .connected(let endpoint, _) = state, endpoint.port == healthy.port { break }
        }
        // The first heartbeat goes out at once; its reply is due within one interval.
        #expect(lostAfter! < .milliseconds(1900), "noticed after \(lostAfter!)")
        #expect(states.count == 5, "\(states)")  // connecting, connected, disconnected, connecting, connected
        await session.close()
        #expect(healthy.authBodies.first?.contains(#""recover":{"#) == true, "\(healthy.authBodies)")
        try await silent.stop()
        try await healthy.stop()
    }

    @Test("messages are delivered once by offset; the reconnect asks for what follows the last offset; close() ends both streams")
    func recoveryAndDeduplication() async throws {
        let comet = try await ScriptedComet.start(answersHeartbeats: true)
        // Answers op 8 with a standing, then sends offsets 1, 2, 2 (a duplicate) and 3, then a plain push (seq 0), then
        // closes; the second connection gets 3 again (duplicate) and 4.
        comet.script = { connection in
            if connection == 1 {
                return [1, 2, 2, 3, 0].map { ScriptedComet.push(offset: $0) } + [nil]
            }
            return [3, 4].map { ScriptedComet.push(offset: $0) }
        }
        let session = try comet.session()
        session.start()
        var received: [UInt64] = []
        for await message in session.messages {
            received.append(message.offset)
            if received.count == 5 { break }
        }
        #expect(received == [1, 2, 3, 0, 4])
        #expect(session.position.epoch == "e1" && session.position.offset == 4)
        let second = try #require(comet.authBodies.dropFirst().first)
        #expect(second.contains(#""epoch":"e1""#) && second.contains(#""offset":3"#), "\(second)")
        await session.close()
        var rest: [GoIMState] = []
        for await state in session.states { rest.append(state) }
        #expect(rest.last == .closed)
        try await comet.stop()
    }

    @Test("an op 8 with an empty epoch (the comet could not read history) keeps the position: the next reconnect recovers from it, nothing twice")
    func emptyEpochKeepsPosition() async throws {
        let comet = try await ScriptedComet.start(answersHeartbeats: true)
        // 1: offsets 1, 2, closed. 2: history unreadable (empty epoch), a live offset 5, closed. 3: e1 again, 5 (a
        // duplicate) and 6.
        comet.epoch = { $0 == 2 ? "" : "e1" }
        comet.script = { connection in
            switch connection {
            case 1: [1, 2].map { ScriptedComet.push(offset: $0) } + [nil]
            case 2: [ScriptedComet.push(offset: 5), nil]
            default: [5, 6].map { ScriptedComet.push(offset: $0) }
            }
        }
        let session = try comet.session()
        session.start()
        var received: [UInt64] = []
        for await message in session.messages {
            received.append(message.offset)
            if message.offset == 6 { break }
        }
        #expect(received == [1, 2, 5, 6])
        let third = try #require(comet.authBodies.dropFirst(2).first)
        #expect(third.contains(#""epoch":"e1""#) && third.contains(#""offset":5"#), "\(third)")
        await session.close()
        try await comet.stop()
    }
}

extension ScriptedComet {
    /// A session of mid 1 in live://1 on this comet that reconnects within 10–20 ms.
    func session() throws -> GoIMSession {
        var configuration = GoIMConfiguration(
            endpoints: [GoIMEndpoint(scheme: .tcp, host: "127.0.0.1", port: port)],
            credentials: .authBody(AuthBody(mid: 1, roomID: "live://1")))
        configuration.backoff = Backoff(base: .milliseconds(10), max: .milliseconds(20))
        return try GoIMSession(configuration)
    }
}

/// A comet on a loopback port that answers op 7 with a history standing (epoch `e1`), answers or ignores heartbeats,
/// and sends what `script` says for the n-th connection (nil = close the connection).
final class ScriptedComet: Sendable {
    let channel: any Channel
    var port: Int { channel.localAddress!.port! }
    private let state = Mutex<(bodies: [String], script: @Sendable (Int) -> [Packet?], epoch: @Sendable (Int) -> String)>(
        ([], { _ in [] }, { _ in "e1" }))
    let connections = Atomic<Int>(0)

    var authBodies: [String] { state.withLock { $0.bodies } }
    var script: @Sendable (Int) -> [Packet?] {
        get { state.withLock { $0.script } }
        set { state.withLock { $0.script = newValue } }
    }
    /// The epoch op 8 gives the n-th connection (`e1`; empty: as a comet that could not read the room's history).
    var epoch: @Sendable (Int) -> String {
        get { state.withLock { $0.epoch } }
        set { state.withLock { $0.epoch = newValue } }
    }

    private init(channel: any Channel) {
        self.channel = channel
    }

    static func push(offset: Int32) -> Packet {
        Packet(operation: Operation(1000), sequence: offset, body: ByteBuffer(string: "m\(offset)"))
    }

    static func start(answersHeartbeats: Bool) async throws -> ScriptedComet {
        let box = Mutex<ScriptedComet?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    let comet = box.withLock { $0! }
                    try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(PacketDecoder()))
                    try child.pipeline.syncOperations.addHandler(
                        Handler(comet: comet, answersHeartbeats: answersHeartbeats, number: comet.connections.add(1, ordering: .relaxed).newValue))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let comet = ScriptedComet(channel: channel)
        box.withLock { $0 = comet }
        return comet
    }

    func stop() async throws {
        try await channel.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = Packet
        let comet: ScriptedComet
        let answersHeartbeats: Bool
        let number: Int

        init(comet: ScriptedComet, answersHeartbeats: Bool, number: Int) {
            self.comet = comet
            self.answersHeartbeats = answersHeartbeats
            self.number = number
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let packet = unwrapInboundIn(data)
            switch packet.operation {
            case .auth:
                comet.state.withLock { $0.bodies.append(String(buffer: packet.body)) }
                let epoch = comet.epoch(number)
                write(context, Packet(operation: .authReply, sequence: packet.sequence, body: ByteBuffer(
                    string: #"{"room":"live://1","epoch":"\#(epoch)","offset":0,"recovering":false,"recovered":false}"#)))
                for push in comet.script(number) {
                    guard let push else {
                        context.close(promise: nil)
                        return
                    }
                    write(context, push)
                }
            case .heartbeat where answersHeartbeats:
                write(context, Packet(operation: .heartbeatReply, sequence: packet.sequence, body: ByteBuffer(integer: Int32(1))))
            default:
                break
            }
        }

        private func write(_ context: ChannelHandlerContext, _ packet: Packet) {
            var buffer = context.channel.allocator.buffer(capacity: packet.encodedLength)
            buffer.writePacket(packet)
            context.writeAndFlush(NIOAny(buffer), promise: nil)
        }
    }
}
