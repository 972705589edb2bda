import NIOCore
import Redis
import Testing
import TestSupport

/// The client against a real redis-server started per test by `TestServers.redis()`.
@Suite("Redis client, real redis-server", .startsServers)
struct RedisClientTests {
    private func withClient(
        password: String? = nil,
        configure: (inout RedisConfiguration) -> Void = { _ in },
        _ body: (RedisClient, ServerProcess) async throws -> Void
    ) async throws {
        let server = try await TestServers.redis(password: password)
        try await server.withRunning { server in
            var configuration = RedisConfiguration(port: server.port, password: password)
            configure(&configuration)
            try await body(RedisClient(configuration: configuration), server)
        }
    }

    private func bytes(_ value: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: value) }

    private func isServerError(_ error: any Error, containing text: String) -> Bool {
        guard case RedisError.server(let message) = error else { return false }
        return message.contains(text)
    }

    // MARK: command families

    @Test func pingAndStrings() async throws {
        try await withClient { client, _ in
            #expect(try await client.ping() == "PONG")
            try await client.set("greeting", "hello")
            #expect(try await client.get("greeting") == ByteBuffer(string: "hello"))
            #expect(try await client.get("missing") == nil)
            try await client.set("n", .integer(41))
            #expect(try await client.send(RedisCommand("INCR", ["n"])) == .integer(42))
            #expect(try await client.get("n").map { String(buffer: $0) } == "42")
        }
    }

    @Test func setWithExpiryExpireAndTTL() async throws {
        try await withClient { client, _ in
            try await client.set("session", "x", expireSeconds: 100)
            let ttl = try await client.ttl("session")
            #expect(ttl > 90 && ttl <= 100)
            try await client.set("plain", "y")
            #expect(try await client.ttl("plain") == -1)
            #expect(try await client.expire("plain", seconds: 50))
            #expect((41...50).contains(try await client.ttl("plain")))
            #expect(try await client.expire("nope", seconds: 50) == false)
            #expect(try await client.ttl("nope") == -2)
            try await client.set("short", "z", expireSeconds: 1)
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try await client.get("short") == nil)
        }
    }

    @Test func mgetReturnsNullForMissingKeys() async throws {
        try await withClient { client, _ in
            try await client.set("k1", "v1")
            try await client.set("k3", "v3")
            let values = try await client.mget(["k1", "k2", "k3"])
            #expect(values == [ByteBuffer(string: "v1"), nil, ByteBuffer(string: "v3")])
            let raw = try await client.send(RedisCommand("MGET", ["k1", "k2"]))
            #expect(raw == .array([.bulkString(ByteBuffer(string: "v1")), .null]))
        }
    }

    @Test func hashes() async throws {
        try await withClient { client, _ throws in
            #expect(try await client.hset("h", "a", "1"))
            #expect(try await client.hset("h", "b", "2"))
            #expect(try await client.hset("h", "a", "one") == false)  // an update, not a new field
            #expect(try await client.hget("h", "a") == ByteBuffer(string: "one"))
            #expect(try await client.hget("h", "zzz") == nil)
            #expect(try await client.hget("nohash", "a") == nil)
            #expect(try await client.hgetall("h") == ["a": ByteBuffer(string: "one"), "b": ByteBuffer(string: "2")])
            #expect(try await client.hgetall("nohash") == [:])
            #expect(try await client.hdel("h", "a", "zzz") == 1)
            #expect(try await client.hgetall("h") == ["b": ByteBuffer(string: "2")])
        }
    }

    @Test func del() async throws {
        try await withClient { client, _ in
            try await client.set("a", "1")
            try await client.set("b", "2")
            #expect(try await client.del("a", "b", "c") == 2)
            #expect(try await client.del(["a"]) == 0)
            #expect(try await client.get("a") == nil)
        }
    }

    @Test func binarySafeKeysFieldsAndValues() async throws {
        try await withClient { client, _ in
            let value = bytes([0x00, 0xFF, 0x0D, 0x0A, 0x00, 0x80, 0x7F, 0x00])
            let key = bytes([0x6B, 0x00, 0xFF])
            _ = try await client.send(RedisCommand("SET", [.bytes(key), .bytes(value)]))
            #expect(try await client.send(RedisCommand("GET", [.bytes(key)])) == .bulkString(value))
            #expect(try await client.send(RedisCommand("STRLEN", [.bytes(key)])) == .integer(8))
            #expect(try await client.get("k") == nil)  // the NUL in the key was not a terminator

            try await client.hset("bin", "f", .bytes(value))
            #expect(try await client.hget("bin", "f") == value)
            #expect(try await client.hgetall("bin") == ["f": value])

            let big = ByteBuffer(bytes: (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            try await client.set("big", .bytes(big))
            #expect(try await client.get("big") == big)
        }
    }

    // MARK: reply types

    @Test func everyRESPReplyType() async throws {
        try await withClient { client, _ in
            #expect(try await client.send(RedisCommand("SET", ["s", "v"])) == .simpleString("OK"))
            #expect(try await client.send(RedisCommand("GET", ["s"])) == .bulkString(ByteBuffer(string: "v")))
            #expect(try await client.send(RedisCommand("GET", ["none"])) == .null)
            #expect(try await client.send(RedisCommand("EXISTS", ["s"])) == .integer(1))
            #expect(try await client.send(RedisCommand("SET", ["e", ""])) == .simpleString("OK"))
            #expect(try await client.send(RedisCommand("GET", ["e"])) == .bulkString(ByteBuffer()))

            await #expect {
                _ = try await client.send(RedisCommand("INCR", ["s"]))
            } throws: { isServerError($0, containing: "not an integer") }
            await #expect {
                _ = try await client.send(RedisCommand("NOSUCHCOMMAND"))
            } throws: { isServerError($0, containing: "unknown command") }

            _ = try await client.send(RedisCommand("RPUSH", ["list", "a", "b", "c"]))
            let list = try await client.send(RedisCommand("LRANGE", ["list", 0, -1]))
            #expect(list == .array(["a", "b", "c"].map { .bulkString(ByteBuffer(string: $0)) }))
            #expect(try await client.send(RedisCommand("LRANGE", ["empty", 0, -1])) == .array([]))
            let config = try await client.send(RedisCommand("CONFIG", "GET", "port"))
            #expect(config.array?.compactMap(\.string) == ["port", "\(client.configuration.port)"])

            let nested = try await client.send(RedisCommand("EVAL", ["return {1, {'a', {2, 'b'}}, {}, 'ok'}", 0]))
            #expect(nested == .array([
                .integer(1),
                .array([
                    .bulkString(ByteBuffer(string: "a")), .array([.integer(2), .bulkString(ByteBuffer(string: "b"))]),
                ]),
                .array([]),
                .bulkString(ByteBuffer(string: "ok")),
            ]))
        }
    }

    // MARK: pipelining and concurrency

    @Test func pipelineOf1000CommandsInOrder() async throws {
        try await withClient { client, _ in
            var commands = (1...1000).map { index -> RedisCommand in
                index % 2 == 0
                    ? RedisCommand("INCR", ["counter"])
                    : RedisCommand("SET", [.string("p\(index)"), .integer(Int64(index))])
            }
            commands.insert(RedisCommand("INCR", ["p1"]), at: 0)  // p1 does not exist yet: 1
            commands.append(RedisCommand("HGET", ["p3", "x"]))  // WRONGTYPE: returned, not thrown
            let replies = try await client.pipeline(commands)
            #expect(replies.count == 1002)
            #expect(replies[0] == .integer(1))
            var counter: Int64 = 0
            for (index, reply) in replies.dropFirst().dropLast().enumerated() {
                if (index + 1) % 2 == 0 {
                    counter += 1
                    #expect(reply == .integer(counter))
                } else {
                    #expect(reply == .simpleString("OK"))
                }
            }
            guard case .error(let message) = replies.last else {
                Issue.record("expected an error reply, got \(String(describing: replies.last))")
                return
            }
            #expect(message.hasPrefix("WRONGTYPE"))
            #expect(try await client.get("p999") == ByteBuffer(string: "999"))
            #expect(try await client.pipeline([]) == [])
        }
    }

    @Test func manyConcurrentCallersGetTheirOwnReplies() async throws {
        try await withClient(configure: { $0.poolSize = 4 }) { client, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<200 {
                    group.addTask {
                        for step in 1...50 {
                            let key = "t\(task)"
                            if step % 2 == 0 {
                                let value = "\(task)-\(step)"
                                try await client.set(key + ":v", .string(value))
                                let got = try await client.get(key + ":v")
                                #expect(got == ByteBuffer(string: value))
                            } else {
                                let count = try await client.send(RedisCommand("INCR", [.string(key)]))
                                #expect(count == .integer(Int64(step / 2 + 1)))
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let totals = try await client.mget((0..<200).map { "t\($0)" })
            #expect(totals.allSatisfy { $0 == ByteBuffer(string: "25") })
            // The load was spread over every pooled connection.
            let clients = try await client.send(RedisCommand("CLIENT", "LIST")).string ?? ""
            #expect(clients.split(separator: "\n").count == 4)
        }
    }

    // MARK: connection set-up

    @Test func passwordAuthentication() async throws {
        try await withClient(password: "s3cret") { client, server throws in
            #expect(try await client.ping() == "PONG")

            let wrong = RedisClient(configuration: RedisConfiguration(port: server.port, password: "wrong"))
            await #expect {
                _ = try await wrong.ping()
            } throws: { error in
                guard case RedisError.authenticationFailed(_, let port, let message) = error else { return false }
                return port == server.port && message.contains("WRONGPASS")
                    && "\(error)".contains("rejected the password")
            }

            let none = RedisClient(configuration: RedisConfiguration(port: server.port))
            await #expect {
                _ = try await none.ping()
            } throws: { isServerError($0, containing: "NOAUTH") }
        }
    }

    @Test("an ACL user authenticates with AUTH user password; another user's password is refused")
    func aclUser() async throws {
        try await withClient(password: "admin-s3cret") { client, server throws in
            _ = try await client.send(
                RedisCommand("ACL", ["SETUSER", "goim", "on", ">goim-s3cret", "~*", "+@all"].map { .string($0) }))
            let user = RedisClient(configuration: RedisConfiguration(port: server.port, password: "goim-s3cret", username: "goim"))
            #expect(try await user.ping() == "PONG")
            let wrong = RedisClient(configuration: RedisConfiguration(port: server.port, password: "admin-s3cret", username: "goim"))
            await #expect {
                _ = try await wrong.ping()
            } throws: { error in
                guard case RedisError.authenticationFailed = error else { return false }
                return true
            }
        }
    }

    @Test func databaseSelection() async throws {
        try await withClient(configure: { $0.database = 2 }) { client, server in
            try await client.set("where", "db2")
            let db0 = RedisClient(configuration: RedisConfiguration(port: server.port))
            #expect(try await db0.get("where") == nil)
            try await db0.set("where", "db0")
            #expect(try await client.get("where") == ByteBuffer(string: "db2"))
            let info = try await client.send(RedisCommand("CLIENT", "INFO")).string ?? ""
            #expect(info.contains("db=2"))

            let outOfRange = RedisClient(configuration: RedisConfiguration(port: server.port, database: 99))
            await #expect {
                _ = try await outOfRange.ping()
            } throws: { error in
                guard case RedisError.connectionFailed = error else { return false }
                return "\(error)".contains("SELECT 99")
            }
        }
    }

    // MARK: timeouts and failures

    @Test func commandTimeoutThenRecovery() async throws {
        // 1 s leaves room for a loaded machine; the server holds the BLPOP reply for 6 s.
        try await withClient(configure: { $0.commandTimeout = .seconds(1); $0.poolSize = 1 }) { client, _ throws in
            let start = ContinuousClock.now
            await #expect {
                _ = try await client.send(RedisCommand("BLPOP", ["nothing", "6"]))
            } throws: { error in
                guard case RedisError.timeout(let command) = error else { return false }
                return command == "BLPOP"
            }
            #expect(ContinuousClock.now - start < .seconds(4))
            // The timed-out connection was closed; the next command gets a fresh one.
            #expect(try await client.ping() == "PONG")
        }
    }

    /// Long timeouts, so a quick failure below can only be the refused connect or the closed connection.
    private func slowTimeouts(_ configuration: inout RedisConfiguration) {
        configuration.connectTimeout = .seconds(10)
        configuration.commandTimeout = .seconds(10)
    }

    @Test func serverRestartInTheMiddle() async throws {
        try await withClient(configure: slowTimeouts) { client, server in
            try await client.set("before", "1")
            await server.stop()
            for _ in 0..<3 {
                let start = ContinuousClock.now
                await #expect {
                    _ = try await client.get("before")
                } throws: { error in
                    switch error {
                    case RedisError.connectionFailed(_, let port, _): return port == server.port
                    case RedisError.connectionClosed: return true
                    default: return false
                    }
                }
                #expect(ContinuousClock.now - start < .seconds(3))  // fails fast, no waiting for a timeout
            }
            try await server.restart()
            try await client.set("after", "2")
            #expect(try await client.get("after") == ByteBuffer(string: "2"))
            #expect(try await client.get("before") == nil)  // no persistence: the restart lost the data
        }
    }

    @Test func serverKilledThenBack() async throws {
        try await withClient(configure: { $0.poolSize = 2 }) { client, server in
            #expect(try await client.ping() == "PONG")
            await server.kill9()
            await #expect(throws: RedisError.self) { _ = try await client.ping() }
            try await server.restart()
            #expect(try await client.ping() == "PONG")
        }
    }

    @Test func serverDownAtFirstUse() async throws {
        let server = try await TestServers.redis()
        await server.stop()
        var configuration = RedisConfiguration(port: server.port)
        slowTimeouts(&configuration)
        let client = RedisClient(configuration: configuration)
        let start = ContinuousClock.now
        await #expect {
            _ = try await client.ping()
        } throws: { error in
            guard case RedisError.connectionFailed(let host, let port, _) = error else { return false }
            let message = "\(error)"
            return host == "127.0.0.1" && port == server.port
                && message.contains("cannot connect to Redis at 127.0.0.1:\(server.port)")
                && message.lowercased().contains("refused")
        }
        #expect(ContinuousClock.now - start < .seconds(3))
        try await server.restart()
        #expect(try await client.ping() == "PONG")
        await server.stop()
    }

    // MARK: lifecycle

    @Test func runClosesConnectionsWhenCancelled() async throws {
        try await withClient { client, server in
            let running = Task { try await client.run() }
            #expect(try await client.ping() == "PONG")
            running.cancel()
            try await running.value
            await #expect {
                _ = try await client.ping()
            } throws: { error in
                guard case RedisError.shutdown = error else { return false }
                return true
            }
            // Its connection is gone: another client sees only itself.
            let observer = RedisClient(configuration: RedisConfiguration(port: server.port))
            let clients = try await observer.send(RedisCommand("CLIENT", "LIST")).string ?? ""
            #expect(clients.split(separator: "\n").count == 1)
        }
    }
}
