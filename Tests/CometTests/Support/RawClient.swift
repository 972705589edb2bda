import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TestLogic

/// A byte-level TCP client: writes exactly the given bytes and collects exactly what the server sends, for golden
/// bytes and hostile inputs. With `reading: false` it never reads (a slow consumer).
final class RawClient: Sendable {
    let channel: any Channel
    private let collector: Collector

    final class Collector: Sendable {
        struct State {
            var bytes = ByteBuffer()
            var waiters: [(Int, CheckedContinuation<Void, any Error>, Int)] = []
            var nextID = 0
            var closed = false
        }
        let state = Mutex(State())

        func append(_ buffer: ByteBuffer) {
            let ready = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
                var copy = buffer
                state.bytes.writeBuffer(&copy)
                var ready: [CheckedContinuation<Void, any Error>] = []
                let available = state.bytes.readableBytes
                state.waiters.removeAll { waiter in
                    if waiter.0 <= available {
                        ready.append(waiter.1)
                        return true
                    }
                    return false
                }
                return ready
            }
            for continuation in ready { continuation.resume() }
        }

        func close() {
            let waiters = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
                state.closed = true
                defer { state.waiters = [] }
                return state.waiters.map(\.1)
            }
            for continuation in waiters { continuation.resume(throwing: TestFailure("connection closed")) }
        }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let collector: Collector
        init(collector: Collector) { self.collector = collector }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            collector.append(unwrapInboundIn(data))
        }
        func channelInactive(context: ChannelHandlerContext) {
            collector.close()
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    static func connect(port: Int, reading: Bool = true, receiveBufferSize: Int? = nil) async throws -> RawClient {
        let collector = Collector()
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: reading)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(collector: collector))
                }
            }
        if let receiveBufferSize {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: .init(receiveBufferSize))
        }
        let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
        return RawClient(channel: channel, collector: collector)
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func send(hex: String) async throws {
        try await send(Array(hexBytes: hex))
    }

    /// All bytes received so far.
    var received: [UInt8] {
        collector.state.withLock { Array($0.bytes.readableBytesView) }
    }

    /// Waits until at least `count` bytes have arrived, then returns the first `count` and drops them.
    func read(_ count: Int, timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        let collector = self.collector
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let id = collector.state.withLock { state -> Int in
                    state.nextID += 1
                    return state.nextID
                }
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                        let outcome = collector.state.withLock { state -> Bool? in
                            if state.bytes.readableBytes >= count { return true }
                            if state.closed || Task.isCancelled { return false }
                            state.waiters.append((count, continuation, id))
                            return nil
                        }
                        switch outcome {
                        case true?: continuation.resume()
                        case false?: continuation.resume(throwing: TestFailure("connection closed before \(count) bytes"))
                        case nil: break
                        }
                    }
                } onCancel: {
                    let waiter = collector.state.withLock { state -> CheckedContinuation<Void, any Error>? in
                        guard let index = state.waiters.firstIndex(where: { $0.2 == id }) else { return nil }
                        return state.waiters.remove(at: index).1
                    }
                    waiter?.resume(throwing: CancellationError())
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("timed out waiting for \(count) bytes; have \(self.received.count)")
            }
            try await group.next()
            group.cancelAll()
        }
        return collector.state.withLock { state in
            Array(state.bytes.readBytes(length: count)!)
        }
    }

    /// Waits until the server closes the connection.
    func waitUntilClosed(timeout: Duration = .seconds(10)) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.channel.closeFuture.get() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("the server did not close the connection")
            }
            try await group.next()
            group.cancelAll()
        }
    }

    func close() async {
        try? await channel.close()
    }
}

extension Array where Element == UInt8 {
    /// Bytes from hex text; spaces are ignored.
    init(hexBytes text: String) {
        let digits = text.filter { !$0.isWhitespace }
        var bytes: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            bytes.append(UInt8(digits[index..<next], radix: 16)!)
            index = next
        }
        self = bytes
    }

    var hex: String { map { String(format: "%02x", $0) }.joined() }
}
