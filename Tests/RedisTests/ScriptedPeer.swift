import NIOCore
import NIOPosix
import Synchronization

/// A scripted stand-in for redis-server on a loopback port: records what the client sends and writes whatever
/// bytes the test asks for, in chunks, so the handler can be tested without a real server.
final class ScriptedPeer: Sendable {
    private struct State {
        var client: (any Channel)?
        var received = ByteBuffer()
    }

    private final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: ScriptedPeer
        init(peer: ScriptedPeer) { self.peer = peer }

        func channelActive(context: ChannelHandlerContext) {
            let channel = context.channel
            peer.state.withLock { $0.client = channel }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            peer.state.withLock { _ = $0.received.writeBuffer(&bytes) }
        }
    }

    private let state = Mutex(State())
    private let server: Mutex<(any Channel)?> = Mutex(nil)

    var port: Int {
        server.withLock { $0?.localAddress?.port ?? 0 }
    }

    static func start() async throws -> ScriptedPeer {
        let peer = ScriptedPeer()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(Recorder(peer: peer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        peer.server.withLock { $0 = channel }
        return peer
    }

    /// Waits until the client has sent at least `count` bytes in total; returns everything received so far.
    func received(atLeast count: Int) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let received = state.withLock { $0.received }
            if received.readableBytes >= count { return String(buffer: received) }
            try await Task.sleep(for: .milliseconds(2))
        }
        return state.withLock { String(buffer: $0.received) }
    }

    /// Writes each chunk in its own flush, pausing between them so the client sees separate reads.
    func reply(_ chunks: [String], pause: Duration = .milliseconds(10)) async throws {
        var client = state.withLock { $0.client }
        let deadline = ContinuousClock.now + .seconds(20)
        while client == nil && ContinuousClock.now < deadline {  // the accept may lag the client's connect
            try await Task.sleep(for: .milliseconds(2))
            client = state.withLock { $0.client }
        }
        guard let client else { throw ChannelError.ioOnClosedChannel }
        for chunk in chunks {
            try await client.writeAndFlush(ByteBuffer(string: chunk)).get()
            try await Task.sleep(for: pause)
        }
    }

    func closeClient() async {
        let client = state.withLock { $0.client }
        try? await client?.close().get()
    }

    func stop() async {
        await closeClient()
        let server = server.withLock { $0 }
        try? await server?.close().get()
    }
}
