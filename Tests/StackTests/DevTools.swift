import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import StackHarness
import Synchronization

/// A minimal Chrome DevTools Protocol client: one page target over its WebSocket, commands sent one at a time
/// and matched to their replies by id. Enough to evaluate JavaScript in the page under test.
final class DevToolsPage: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<DevToolsHandler>
    private let nextID = Atomic<Int>(0)

    private init(channel: any Channel, handler: NIOLoopBound<DevToolsHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects to `ws://127.0.0.1:<port><path>` (a target's `webSocketDebuggerUrl`).
    static func connect(port: Int, path: String) async throws -> DevToolsPage {
        let upgrade: EventLoopFuture<(any Channel)?> = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<(any Channel)?>(
                        maxFrameSize: 64 << 20,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(DevToolsHandler())
                                return channel
                            }
                        })
                    // DevTools only answers requests whose Host is an IP address or localhost.
                    let head = HTTPRequestHead(
                        version: .http1_1, method: .GET, uri: path, headers: ["Host": "127.0.0.1:\(port)"])
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration<(any Channel)?>(
                        upgradeRequestHead: head, upgraders: [upgrader],
                        notUpgradingCompletionHandler: { $0.eventLoop.makeSucceededFuture(nil) })
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: .init(upgradeConfiguration: configuration))
                }
            }
        // Bounded: a browser that accepts the connection but never answers the upgrade must not hang the suite.
        // (A promise completed twice keeps its first result.)
        let bounded = upgrade.eventLoop.makePromise(of: (any Channel)?.self)
        let timeout = upgrade.eventLoop.scheduleTask(in: .seconds(15)) {
            bounded.fail(StackTestError("DevTools did not answer the WebSocket upgrade on port \(port) within 15 s"))
        }
        upgrade.whenComplete { result in
            timeout.cancel()
            bounded.completeWith(result)
        }
        let upgraded = try await bounded.futureResult.get()
        guard let channel = upgraded else {
            throw StackTestError("DevTools refused the WebSocket upgrade on port \(port) \(path)")
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: DevToolsHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return DevToolsPage(channel: channel, handler: handler)
    }

    /// Sends one command and returns its `result` object (as JSON bytes), or throws the protocol's error.
    func call(_ method: String, _ params: some Encodable & Sendable, timeout: Duration = .seconds(10)) async throws -> Data {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let text = try JSONEncoder().encode(DevToolsCommand(id: id, method: method, params: params))
        let promise = channel.eventLoop.makePromise(of: Data.self)
        let handler = self.handler
        try await channel.eventLoop.submit {
            handler.value.send(id: id, text: ByteBuffer(bytes: text), promise: promise, timeout: TimeAmount(timeout))
        }.get()
        let reply = try await promise.futureResult.get()
        let object = try JSONSerialization.jsonObject(with: reply) as? [String: Any]
        if let error = object?["error"] as? [String: Any] {
            throw StackTestError("DevTools \(method) failed: \(error["message"] ?? error)")
        }
        return try JSONSerialization.data(withJSONObject: object?["result"] ?? [:])
    }

    /// Evaluates `expression` in the page and returns its value as a string (`String(value)`; nil for undefined/null).
    func evaluate(_ expression: String) async throws -> String? {
        struct Params: Encodable, Sendable {
            let expression: String
            let returnByValue = true
            let awaitPromise = true
        }
        let wrapped = "(async () => { const v = await (\(expression)); return v === undefined || v === null ? null : String(v); })()"
        let result = try await call("Runtime.evaluate", Params(expression: wrapped))
        let object = try JSONSerialization.jsonObject(with: result) as? [String: Any]
        if let exception = object?["exceptionDetails"] as? [String: Any] {
            throw StackTestError("the page threw: \(exception["text"] ?? "") \((exception["exception"] as? [String: Any])?["description"] ?? "")")
        }
        return (object?["result"] as? [String: Any])?["value"] as? String
    }

    func close() async {
        try? await channel.close()
    }
}

/// One DevTools command on the wire.
private struct DevToolsCommand<Params: Encodable>: Encodable {
    let id: Int
    let method: String
    let params: Params
}

/// Collects text messages (possibly fragmented) and completes the promise of the command whose id they answer;
/// events (messages without an id) are ignored. Lives on the channel's event loop.
final class DevToolsHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var context: ChannelHandlerContext?
    private var waiters: [Int: EventLoopPromise<Data>] = [:]
    private var message = ByteBuffer()

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll()
        self.context = nil
    }

    func send(id: Int, text: ByteBuffer, promise: EventLoopPromise<Data>, timeout: TimeAmount) {
        guard let context, context.channel.isActive else {
            promise.fail(StackTestError("the DevTools connection is closed"))
            return
        }
        waiters[id] = promise
        context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.waiters.removeValue(forKey: id)?.fail(StackTestError("DevTools did not answer command \(id) in time"))
        }
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: text)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary, .continuation:
            var payload = frame.unmaskedData
            message.writeBuffer(&payload)
            guard frame.fin else { return }
            let bytes = Data(message.readableBytesView)
            message.clear()
            guard let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any],
                let id = object["id"] as? Int
            else { return }
            waiters.removeValue(forKey: id)?.succeed(bytes)
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll()
        context.fireChannelInactive()
    }

    private func failAll() {
        let pending = waiters
        waiters = [:]
        for promise in pending.values { promise.fail(StackTestError("the DevTools connection closed")) }
    }
}
