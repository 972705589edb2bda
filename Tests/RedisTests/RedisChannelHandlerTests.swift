import Logging
import NIOCore
import NIOPosix
import Testing

@testable import Redis

/// The channel handler and connection against a scripted peer (no redis-server): exact bytes on the wire,
/// replies split across reads, FIFO matching, pipelining, timeouts and broken streams.
@Suite("Redis channel handler, scripted peer")
struct RedisChannelHandlerTests {
    private func connect(
        _ peer: ScriptedPeer, commandTimeout: Duration = .seconds(30)
    ) async throws -> RedisConnection {
        let configuration = RedisConfiguration(port: peer.port, commandTimeout: commandTimeout)
        return try await RedisConnection.connect(
            configuration, on: MultiThreadedEventLoopGroup.singleton.next(), logger: Logger(label: "test"))
    }

    /// What `commands` look like on the wire.
    private func wire(_ commands: RedisCommand...) throws -> String {
        var buffer = ByteBuffer()
        for command in commands { try RESPEncoder.encode(command, into: &buffer) }
        return String(buffer: buffer)
    }

    @Test func splitRepliesAreMatchedToRequestsInOrder() async throws {
        let peer = try await ScriptedPeer.start()
        let connection = try await connect(peer)
        let get = RedisCommand("GET", ["a"])
        let pipeline = [RedisCommand("SET", ["b", "bb"]), RedisCommand("GET", ["b"])]
        // Start the requests one after another so their order on the wire is known.
        let first = Task { try await connection.send([get]) }
        #expect(try await peer.received(atLeast: 20) == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n")
        let second = Task { try await connection.send(pipeline) }
        let beforePing = try wire(get, pipeline[0], pipeline[1])
        let third = Task {
            _ = try await peer.received(atLeast: beforePing.utf8.count)  // the PING goes after the pipeline
            return try await connection.send([RedisCommand("PING")])
        }
        let all = try wire(get, pipeline[0], pipeline[1], RedisCommand("PING"))
        #expect(try await peer.received(atLeast: all.utf8.count) == all)

        try await peer.reply(["$1\r\n1", "\r\n+OK\r\n$", "2\r\nbb\r", "\n+PO", "NG\r\n"])

        #expect(try await first.value == [.bulkString(ByteBuffer(string: "1"))])
        #expect(try await second.value == [.simpleString("OK"), .bulkString(ByteBuffer(string: "bb"))])
        #expect(try await third.value == [.simpleString("PONG")])
        _ = connection.close()
        await peer.stop()
    }

    @Test func aPipelineIsOneWriteAnsweredAtOnce() async throws {
        let peer = try await ScriptedPeer.start()
        let connection = try await connect(peer)
        let commands = (0..<1000).map { RedisCommand("INCR", [.string("n\($0)")]) }
        let replies = Task { try await connection.send(commands) }
        // Every command reaches the peer before it has answered anything: one round trip.
        var buffer = ByteBuffer()
        for command in commands { try RESPEncoder.encode(command, into: &buffer) }
        let expected = String(buffer: buffer)
        #expect(try await peer.received(atLeast: expected.utf8.count) == expected)
        try await peer.reply([(1...1000).map { ":\($0)\r\n" }.joined()])
        #expect(try await replies.value == (1...1000).map { RESPValue.integer(Int64($0)) })
        _ = connection.close()
        await peer.stop()
    }

    @Test func timeoutFailsTheCommandAndClosesTheConnection() async throws {
        let peer = try await ScriptedPeer.start()
        let connection = try await connect(peer, commandTimeout: .milliseconds(100))
        let slow = Task { try await connection.send([RedisCommand("BLPOP", ["q", 0])]) }
        _ = try await peer.received(atLeast: 1)
        let behind = Task { try await connection.send([RedisCommand("PING")]) }
        await #expect {
            _ = try await slow.value
        } throws: { error in
            guard case RedisError.timeout(let command) = error else { return false }
            return command == "BLPOP"
        }
        await #expect {
            _ = try await behind.value
        } throws: { error in
            guard case RedisError.connectionClosed = error else { return false }
            return true
        }
        try await connection.channel.closeFuture.get()
        await #expect(throws: RedisError.self) { try await connection.send([RedisCommand("PING")]) }
        await peer.stop()
    }

    @Test func bytesThatAreNotRESPFailTheRequestAndClose() async throws {
        let peer = try await ScriptedPeer.start()
        let connection = try await connect(peer)
        let request = Task { try await connection.send([RedisCommand("PING")]) }
        _ = try await peer.received(atLeast: 14)
        try await peer.reply(["!garbage\r\n"])
        await #expect {
            _ = try await request.value
        } throws: { error in
            guard case RedisError.protocolError = error else { return false }
            return true
        }
        try await connection.channel.closeFuture.get()
        await peer.stop()
    }

    @Test func aReplyNobodyAskedForClosesTheConnection() async throws {
        let peer = try await ScriptedPeer.start()
        let connection = try await connect(peer)
        try await peer.reply(["+OK\r\n"])
        try await connection.channel.closeFuture.get()
        #expect(!connection.isActive)
        await peer.stop()
    }

    @Test func peerClosingMidRequestFailsWithConnectionClosed() async throws {
        let peer = try await ScriptedPeer.start()
        let connection = try await connect(peer)
        let request = Task { try await connection.send([RedisCommand("GET", ["k"])]) }
        _ = try await peer.received(atLeast: 20)
        try await peer.reply(["$5\r\nhe"])  // half a reply, then the peer goes away
        await peer.closeClient()
        await #expect {
            _ = try await request.value
        } throws: { error in
            guard case RedisError.connectionClosed = error else { return false }
            return true
        }
        // Later commands on the dead connection fail at once.
        await #expect {
            _ = try await connection.send([RedisCommand("PING")])
        } throws: { error in
            guard case RedisError.connectionClosed = error else { return false }
            return true
        }
        await peer.stop()
    }

    @Test func aCancelledCallerStopsWaitingAndTheStreamStaysInStep() async throws {
        let peer = try await ScriptedPeer.start()
        let connection = try await connect(peer)
        let cancelled = Task { try await connection.send([RedisCommand("GET", ["slow"])]) }
        _ = try await peer.received(atLeast: 23)
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { _ = try await cancelled.value }
        let next = Task { try await connection.send([RedisCommand("GET", ["k"])]) }
        _ = try await peer.received(atLeast: 23 + 20)
        try await peer.reply(["$4\r\nslow\r\n$1\r\nk\r\n"])
        #expect(try await next.value == [.bulkString(ByteBuffer(string: "k"))])
        _ = connection.close()
        await peer.stop()
    }
}
