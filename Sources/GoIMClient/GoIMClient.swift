import GoIMProtocol
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Synchronization

/// A packet received from the server.
public struct ReceivedPacket: Sendable, Hashable {
    public var packet: Packet
    /// True when the packet came inside a WebSocket op 9 envelope: the envelope is split and each inner packet
    /// is delivered on its own (TCP clients receive the inner packets directly, so this is always false there).
    public var inEnvelope: Bool

    public init(packet: Packet, inEnvelope: Bool) {
        self.packet = packet
        self.inEnvelope = inEnvelope
    }
}

public enum GoIMClientError: Error, CustomStringConvertible, Equatable {
    /// The connection closed before the awaited reply arrived.
    case closed
    /// No packet with this operation arrived in time.
    case timeout(Operation)
    /// The server did not upgrade the connection to WebSocket.
    case upgradeRefused
    /// A WebSocket-only call on a TCP client.
    case notWebSocket

    public var description: String {
        switch self {
        case .closed: "the connection is closed"
        case .timeout(let operation): "no \(operation) arrived in time"
        case .upgradeRefused: "the server refused the WebSocket upgrade"
        case .notWebSocket: "not a WebSocket connection"
        }
    }
}

/// A goim client connection over TCP, WebSocket or WebSocket over TLS, built on SwiftNIO: no thread and no task per
/// connection, so one process can hold thousands (tests, `goim-bench`).
///
/// Packets the client awaits (`auth`, `heartbeat`, `request`) are handed to the caller that awaits them and are
/// not delivered again; every other packet goes to `packets` (or the delivery handler).
public final class GoIMClient: Sendable {
    public enum Transport: Sendable {
        case tcp
        /// WebSocket with the upgrade at `path`; `headers` are added to the upgrade request (e.g. `Cookie`).
        case webSocket(path: String = "/sub", headers: HTTPHeaders = [:])
        /// WebSocket over TLS; share one `NIOSSLContext` between connections.
        case webSocketTLS(path: String = "/sub", headers: HTTPHeaders = [:], context: NIOSSLContext, serverHostname: String?)

        var isWebSocket: Bool {
            if case .tcp = self { return false }
            return true
        }
    }

    /// Where received packets go.
    public enum Delivery: Sendable {
        /// Into `packets`, an unbounded `AsyncStream`.
        case stream
        /// To a handler, called on the connection's event loop (keep it short).
        case handler(@Sendable (ReceivedPacket) -> Void)
        /// Only counted (`receivedCount`).
        case count
    }

    /// Largest body accepted from the server (server output is not limited by goim's 4096-byte inbound rule).
    public static let maxInboundBody = 64 << 20

    public let channel: any Channel
    /// Received packets (with `.stream` delivery); finishes when the connection closes.
    public let packets: AsyncStream<ReceivedPacket>
    public let isWebSocket: Bool
    private let core: NIOLoopBound<ClientCore>
    private let counter: ReceiveCounter

    private init(channel: any Channel, packets: AsyncStream<ReceivedPacket>, isWebSocket: Bool, core: NIOLoopBound<ClientCore>, counter: ReceiveCounter) {
        self.channel = channel
        self.packets = packets
        self.isWebSocket = isWebSocket
        self.core = core
        self.counter = counter
    }

    /// Packets delivered so far (to `packets`, the handler, or only counted); awaited replies are not counted.
    public var receivedCount: Int { counter.count.load(ordering: .relaxed) }

    public var isActive: Bool { channel.isActive }

    // MARK: connecting

    /// Connects (and for WebSocket, upgrades). Throws `GoIMClientError.upgradeRefused` when the server does not
    /// switch protocols. `localAddress` binds the client side to a source IP (e.g. `127.0.0.2`), so more
    /// connections than one address's ephemeral ports can be opened to one server port.
    public static func connect(
        host: String = "127.0.0.1",
        port: Int,
        transport: Transport = .tcp,
        delivery: Delivery = .stream,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(10),
        receiveBufferSize: Int? = nil,
        localAddress: String? = nil
    ) async throws -> GoIMClient {
        let (stream, continuation) = AsyncStream.makeStream(of: ReceivedPacket.self, bufferingPolicy: .unbounded)
        let counter = ReceiveCounter()
        let sink: ClientCore.Sink
        switch delivery {
        case .stream: sink = .stream(continuation)
        case .handler(let handler):
            sink = .handler(handler)
            continuation.finish()
        case .count:
            sink = .none
            continuation.finish()
        }

        var bootstrap = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        if let receiveBufferSize {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: .init(receiveBufferSize))
        }
        if let localAddress {
            // A source address of its own (e.g. 127.0.0.2) gives another ephemeral port range.
            bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: localAddress, port: 0))
        }

        switch transport {
        case .tcp:
            let channel = try await bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let core = ClientCore(sink: sink, counter: counter, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(PacketDecoder(limits: PacketLimits(maxBodySize: maxInboundBody))))
                    try channel.pipeline.syncOperations.addHandler(TCPClientAdapter())
                    try channel.pipeline.syncOperations.addHandler(core)
                }
            }.connect(host: host, port: port).get()
            let core = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientCore.self), eventLoop: channel.eventLoop)
            }.get()
            return GoIMClient(channel: channel, packets: stream, isWebSocket: false, core: core, counter: counter)

        case .webSocket(let path, let headers):
            return try await connectWebSocket(
                bootstrap: bootstrap, host: host, port: port, path: path, headers: headers, tls: nil, sink: sink,
                counter: counter, stream: stream)

        case .webSocketTLS(let path, let headers, let context, let serverHostname):
            return try await connectWebSocket(
                bootstrap: bootstrap, host: host, port: port, path: path, headers: headers,
                tls: (context, serverHostname), sink: sink, counter: counter, stream: stream)
        }
    }

    private enum UpgradeResult: Sendable {
        case upgraded
        case refused
    }

    private static func connectWebSocket(
        bootstrap: ClientBootstrap, host: String, port: Int, path: String, headers: HTTPHeaders,
        tls: (NIOSSLContext, String?)?, sink: ClientCore.Sink, counter: ReceiveCounter, stream: AsyncStream<ReceivedPacket>
    ) async throws -> GoIMClient {
        let upgraded = FutureBox<UpgradeResult>()
        let channel = try await bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let operations = channel.pipeline.syncOperations
                if let (context, serverHostname) = tls {
                    try operations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverHostname))
                }
                let upgrader = NIOTypedWebSocketClientUpgrader<UpgradeResult>(
                    maxFrameSize: maxInboundBody + 64,
                    upgradePipelineHandler: { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            let operations = channel.pipeline.syncOperations
                            try operations.addHandler(WebSocketClientAdapter())
                            try operations.addHandler(ClientCore(sink: sink, counter: counter, eventLoop: channel.eventLoop))
                            return .upgraded
                        }
                    })
                var requestHeaders = headers
                if !requestHeaders.contains(name: "Host") { requestHeaders.add(name: "Host", value: "\(host):\(port)") }
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: requestHeaders)
                let configuration = NIOTypedHTTPClientUpgradeConfiguration<UpgradeResult>(
                    upgradeRequestHead: head, upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in
                        channel.eventLoop.makeSucceededFuture(.refused)
                    })
                let future = try operations.configureUpgradableHTTPClientPipeline(
                    configuration: .init(upgradeConfiguration: configuration))
                upgraded.future.withLock { $0 = future }
            }
        }.connect(host: host, port: port).get()

        guard let future = upgraded.future.withLock({ $0 }) else { throw GoIMClientError.upgradeRefused }
        let result: UpgradeResult
        do {
            result = try await future.get()
        } catch {
            channel.close(promise: nil)
            throw GoIMClientError.upgradeRefused
        }
        guard result == .upgraded else {
            channel.close(promise: nil)
            throw GoIMClientError.upgradeRefused
        }
        let core = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientCore.self), eventLoop: channel.eventLoop)
        }.get()
        return GoIMClient(channel: channel, packets: stream, isWebSocket: true, core: core, counter: counter)
    }

    // MARK: goim operations

    /// Sends op 7 with `body` and waits for op 8.
    @discardableResult
    public func auth(_ body: AuthBody, version: Int16 = 1, sequence: Int32 = 1, timeout: Duration = .seconds(10)) async throws -> Packet {
        try await auth(token: ByteBuffer(bytes: body.encoded()), version: version, sequence: sequence, timeout: timeout)
    }

    /// Sends op 7 with raw `token` bytes and waits for op 8.
    @discardableResult
    public func auth(token: ByteBuffer, version: Int16 = 1, sequence: Int32 = 1, timeout: Duration = .seconds(10)) async throws -> Packet {
        try await request(
            Packet(version: version, operation: .auth, sequence: sequence, body: token), replyOperation: .authReply,
            timeout: timeout)
    }

    /// Sends op 18 (swift-goim's token refresh) with a fresh token and returns the op 19 reply (its body is JSON
    /// `{"code":0,"expires_at":...}` or `{"code":-401,"message":"..."}`).
    @discardableResult
    public func refreshToken(_ token: ByteBuffer, sequence: Int32 = 1, timeout: Duration = .seconds(10)) async throws -> Packet {
        try await request(
            Packet(version: 1, operation: .tokenRefresh, sequence: sequence, body: token), replyOperation: .tokenRefreshReply,
            timeout: timeout)
    }

    /// Sends op 2 and returns the online count of the op 3 reply.
    @discardableResult
    public func heartbeat(version: Int16 = 1, sequence: Int32 = 1, timeout: Duration = .seconds(10)) async throws -> Int32 {
        let reply = try await request(
            Packet(version: version, operation: .heartbeat, sequence: sequence), replyOperation: .heartbeatReply,
            timeout: timeout)
        return HeartbeatReply.online(in: reply.body) ?? -1
    }

    /// Sends `packet` and waits for the next packet with `replyOperation`, which is returned instead of delivered.
    public func request(_ packet: Packet, replyOperation: Operation, timeout: Duration = .seconds(10)) async throws -> Packet {
        let core = self.core
        let isWebSocket = self.isWebSocket
        let promise = channel.eventLoop.makePromise(of: Packet.self)
        let deadline = TimeAmount(timeout)
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            core.value.await(replyOperation, promise: promise, timeout: deadline)
            return core.value.write(Self.encode(packet, webSocket: isWebSocket))
        }.get()
        return try await promise.futureResult.get()
    }

    /// Waits for the next packet with `operation` (it is then not delivered to `packets`). To catch a reply to
    /// something you are about to send, use `expect(_:timeout:)` before sending.
    public func next(_ operation: Operation, timeout: Duration = .seconds(10)) async throws -> Packet {
        try await expect(operation, timeout: timeout).value()
    }

    /// Registers now for the next packet with `operation` and returns a handle to await it later, so a reply
    /// cannot slip past between sending and waiting.
    public func expect(_ operation: Operation, timeout: Duration = .seconds(10)) async throws -> PendingPacket {
        let core = self.core
        let promise = channel.eventLoop.makePromise(of: Packet.self)
        let deadline = TimeAmount(timeout)
        try await channel.eventLoop.submit { core.value.await(operation, promise: promise, timeout: deadline) }.get()
        return PendingPacket(future: promise.futureResult)
    }

    /// A packet awaited with `expect(_:timeout:)`.
    public struct PendingPacket: Sendable {
        let future: EventLoopFuture<Packet>

        public func value() async throws -> Packet {
            try await future.get()
        }
    }

    /// Sends one packet (one WebSocket message on WebSocket).
    public func send(_ packet: Packet) async throws {
        try await write(Self.encode(packet, webSocket: isWebSocket))
    }

    /// Sends one packet without waiting for the write (for load generators); errors close the connection.
    public func sendAndForget(_ packet: Packet) {
        let core = self.core
        let item = Self.encode(packet, webSocket: isWebSocket)
        channel.eventLoop.execute { _ = core.value.write(item) }
    }

    /// Sends `bytes` as they are: on TCP straight onto the stream (any framing, malformed or partial), on WebSocket
    /// as the payload of one binary message.
    public func sendRaw(_ bytes: ByteBuffer) async throws {
        if isWebSocket {
            try await write(.frame(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: bytes)))
        } else {
            try await write(.bytes(bytes))
        }
    }

    /// Sends one WebSocket frame as given (set `maskKey` for a conforming client frame).
    public func sendFrame(_ frame: WebSocketFrame) async throws {
        guard isWebSocket else { throw GoIMClientError.notWebSocket }
        try await write(.frame(frame))
    }

    /// Sends a WebSocket Ping and returns the Pong's payload.
    public func ping(_ payload: ByteBuffer = ByteBuffer(string: "ping"), timeout: Duration = .seconds(10)) async throws -> ByteBuffer {
        guard isWebSocket else { throw GoIMClientError.notWebSocket }
        let core = self.core
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let deadline = TimeAmount(timeout)
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            core.value.awaitPong(promise: promise, timeout: deadline)
            return core.value.write(.frame(WebSocketFrame(fin: true, opcode: .ping, maskKey: .random(), data: payload)))
        }.get()
        return try await promise.futureResult.get()
    }

    /// Sends a WebSocket Close with `code` and waits until the connection closes. Returns the status code of the
    /// server's Close frame, or nil if the server closed without one.
    public func closeHandshake(code: UInt16 = 1000, timeout: Duration = .seconds(10)) async throws -> UInt16? {
        guard isWebSocket else { throw GoIMClientError.notWebSocket }
        var payload = ByteBuffer()
        payload.writeInteger(code)
        try await write(.frame(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: payload)))
        try await waitUntilClosed(timeout: timeout)
        let core = self.core
        return try await channel.eventLoop.submit { core.value.closeCode }.get()
    }

    /// Returns when the server (or anything) closed the connection; throws `timeout` otherwise.
    public func waitUntilClosed(timeout: Duration = .seconds(10)) async throws {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let task = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            promise.fail(GoIMClientError.timeout(.disconnectReply))
        }
        channel.closeFuture.whenComplete { _ in
            task.cancel()
            promise.succeed(())
        }
        try await promise.futureResult.get()
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }

    private func write(_ item: ClientCore.Outbound) async throws {
        let core = self.core
        try await channel.eventLoop.flatSubmit { core.value.write(item) }.get()
    }

    static func encode(_ packet: Packet, webSocket: Bool) -> ClientCore.Outbound {
        var buffer = ByteBuffer()
        buffer.writePacket(packet)
        return webSocket ? .frame(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buffer)) : .bytes(buffer)
    }
}

final class FutureBox<Value: Sendable>: Sendable {
    let future = Mutex<EventLoopFuture<Value>?>(nil)
}

final class ReceiveCounter: Sendable {
    let count = Atomic<Int>(0)
}

/// TCP: decoded packets are delivered as they are.
final class TCPClientAdapter: ChannelInboundHandler {
    typealias InboundIn = Packet
    typealias InboundOut = ReceivedPacket

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(ReceivedPacket(packet: unwrapInboundIn(data), inEnvelope: false)))
    }
}

/// WebSocket: one packet per binary message; an op 9 message is split into its inner packets. Pong and Close frames
/// go to the core as events.
final class WebSocketClientAdapter: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ReceivedPacket

    enum Event {
        case pong(ByteBuffer)
        case close(UInt16?)
    }

    private var message: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .text, .continuation:
            var payload = frame.unmaskedData
            if var buffer = message {
                message = nil
                buffer.writeBuffer(&payload)
                payload = buffer
            }
            guard frame.fin else {
                message = payload
                return
            }
            deliver(context, payload)
        case .pong:
            context.fireUserInboundEventTriggered(Event.pong(frame.unmaskedData))
        case .ping:
            break
        case .connectionClose:
            var payload = frame.unmaskedData
            context.fireUserInboundEventTriggered(Event.close(payload.readInteger(as: UInt16.self)))
        default:
            break
        }
    }

    private func deliver(_ context: ChannelHandlerContext, _ message: ByteBuffer) {
        do {
            let packet = try WebSocketPacket.decode(message, limits: PacketLimits(maxBodySize: GoIMClient.maxInboundBody))
            if packet.operation == .raw {
                for inner in try RawBatch.split(packet.body) {
                    context.fireChannelRead(wrapInboundOut(ReceivedPacket(packet: inner, inEnvelope: true)))
                }
            } else {
                context.fireChannelRead(wrapInboundOut(ReceivedPacket(packet: packet, inEnvelope: false)))
            }
        } catch {
            context.fireErrorCaught(error)
        }
    }
}

/// The client's state on its event loop: reply waiters and delivery.
final class ClientCore: ChannelInboundHandler {
    typealias InboundIn = ReceivedPacket

    enum Sink: Sendable {
        case stream(AsyncStream<ReceivedPacket>.Continuation)
        case handler(@Sendable (ReceivedPacket) -> Void)
        case none
    }

    enum Outbound {
        case bytes(ByteBuffer)
        case frame(WebSocketFrame)
    }

    private struct Waiter {
        let id: Int
        let operation: Operation
        let promise: EventLoopPromise<Packet>
    }

    private let sink: Sink
    private let counter: ReceiveCounter
    private let eventLoop: any EventLoop
    private var context: ChannelHandlerContext?
    private var waiters: [Waiter] = []
    private var pongWaiters: [EventLoopPromise<ByteBuffer>] = []
    private var nextWaiter = 0
    private(set) var closeCode: UInt16?

    init(sink: Sink, counter: ReceiveCounter, eventLoop: any EventLoop) {
        self.sink = sink
        self.counter = counter
        self.eventLoop = eventLoop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func write(_ item: Outbound) -> EventLoopFuture<Void> {
        guard let context else {
            return eventLoop.makeFailedFuture(GoIMClientError.closed)
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        switch item {
        case .bytes(let buffer): context.writeAndFlush(NIOAny(buffer), promise: promise)
        case .frame(let frame): context.writeAndFlush(NIOAny(frame), promise: promise)
        }
        return promise.futureResult
    }

    func await(_ operation: Operation, promise: EventLoopPromise<Packet>, timeout: TimeAmount) {
        guard let context, context.channel.isActive else {
            promise.fail(GoIMClientError.closed)
            return
        }
        nextWaiter += 1
        let id = nextWaiter
        waiters.append(Waiter(id: id, operation: operation, promise: promise))
        context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            if let index = self.waiters.firstIndex(where: { $0.id == id }) {
                self.waiters.remove(at: index).promise.fail(GoIMClientError.timeout(operation))
            }
        }
    }

    func awaitPong(promise: EventLoopPromise<ByteBuffer>, timeout: TimeAmount) {
        guard let context, context.channel.isActive else {
            promise.fail(GoIMClientError.closed)
            return
        }
        pongWaiters.append(promise)
        context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            promise.fail(GoIMClientError.timeout(.heartbeatReply))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let received = unwrapInboundIn(data)
        if let index = waiters.firstIndex(where: { $0.operation == received.packet.operation }) {
            waiters.remove(at: index).promise.succeed(received.packet)
            return
        }
        counter.count.add(1, ordering: .relaxed)
        switch sink {
        case .stream(let continuation): continuation.yield(received)
        case .handler(let handler): handler(received)
        case .none: break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case WebSocketClientAdapter.Event.pong(let payload):
            if !pongWaiters.isEmpty { pongWaiters.removeFirst().succeed(payload) }
        case WebSocketClientAdapter.Event.close(let code):
            closeCode = code ?? 1005
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish()
        self.context = nil
    }

    private func finish() {
        let pending = waiters
        waiters = []
        for waiter in pending { waiter.promise.fail(GoIMClientError.closed) }
        let pongs = pongWaiters
        pongWaiters = []
        for promise in pongs { promise.fail(GoIMClientError.closed) }
        if case .stream(let continuation) = sink { continuation.finish() }
    }
}
