import GoIMConfig
import NIOCore
import Redis
import TestSupport
import Testing

@testable import History

@Suite(.startsServers) struct HistoryStoreTests {
    func makeStore(_ server: ServerProcess) -> (HistoryStore, RedisClient) {
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: server.port, connectTimeout: .seconds(5)))
        return (HistoryStore(redis: redis), redis)
    }

    func append(
        _ store: HistoryStore, _ stream: HistoryStream, ids: [String], size: Int = 100, ttl: Duration = .seconds(60),
        newEpoch: Bool = false
    ) async throws -> [HistoryStamp] {
        let requests = ids.map {
            HistoryStore.Append(
                stream: stream, messageID: $0, operation: 1000, body: ByteBuffer(string: "m-\($0)"),
                limits: HistoryLimits(size: size, ttl: ttl), newEpoch: newEpoch)
        }
        return try await store.append(requests).map { try $0.get() }
    }

    @Test func offsetsIncreaseAndAReadReturnsWhatCameAfter() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (store, _) = makeStore(server)
        let room = HistoryStream.room("live://1")
        let stamps = try await append(store, room, ids: (1...5).map { "s\($0)" })
        #expect(stamps.map(\.offset) == [1, 2, 3, 4, 5])
        let epoch = stamps[0].epoch
        #expect(epoch.count == 16 && stamps.allSatisfy { $0.epoch == epoch && !$0.repeated })

        let page = try await store.read(room, since: 2, epoch: epoch, limit: 100)
        #expect(page.epoch == epoch && page.top == 5 && page.first == 1 && page.complete)
        #expect(page.messages.map(\.offset) == [3, 4, 5])
        #expect(page.messages.map { String(buffer: $0.body) } == ["m-s3", "m-s4", "m-s5"])
        #expect(page.messages.allSatisfy { $0.operation == 1000 })

        // Up to date: nothing to send, complete.
        let current = try await store.read(room, since: 5, epoch: epoch, limit: 100)
        #expect(current.messages.isEmpty && current.complete)
        // A limit cuts the page short: not complete.
        let cut = try await store.read(room, since: 0, epoch: epoch, limit: 2)
        #expect(cut.messages.map(\.offset) == [1, 2] && !cut.complete)
        // An offset from the future of this epoch cannot be right.
        #expect(try await store.read(room, since: 9, epoch: epoch, limit: 10).complete == false)
    }

    @Test func aRedeliveredMessageKeepsItsOffsetAndIsStoredOnce() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (store, _) = makeStore(server)
        let room = HistoryStream.room("live://2")
        _ = try await append(store, room, ids: ["a", "b", "c"])
        let again = try await append(store, room, ids: ["b"])
        #expect(again[0].offset == 2 && again[0].repeated)
        let page = try await store.read(room, since: 0, epoch: "", limit: 100)
        #expect(page.messages.map(\.offset) == [1, 2, 3] && page.top == 3)
    }

    @Test func trimmingAndEpochChangesAreReportedAsIncomplete() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (store, redis) = makeStore(server)
        let room = HistoryStream.room("chat://trim")
        let stamps = try await append(store, room, ids: (1...10).map { "t\($0)" }, size: 4)
        let epoch = stamps[0].epoch
        // Only 7...10 are held: a reader at 3 missed 4, 5 and 6.
        let trimmed = try await store.read(room, since: 3, epoch: epoch, limit: 100)
        #expect(trimmed.first == 7 && trimmed.messages.map(\.offset) == [7, 8, 9, 10] && !trimmed.complete)
        // A reader at 6 missed nothing.
        #expect(try await store.read(room, since: 6, epoch: epoch, limit: 100).complete)

        // The store loses everything (a restart without persistence): the next write starts a new epoch.
        _ = try await redis.send(RedisCommand("FLUSHALL"))
        let after = try await append(store, room, ids: ["n1", "n2"], size: 4)
        #expect(after[0].epoch != epoch && after.map(\.offset) == [1, 2])
        let stale = try await store.read(room, since: 8, epoch: epoch, limit: 100)
        #expect(stale.epoch == after[0].epoch && !stale.complete && stale.messages.map(\.offset) == [1, 2])

        // A writer that could not write asks for a new epoch: the old history goes, offsets go on.
        let broken = try await append(store, room, ids: ["n3"], size: 4, newEpoch: true)
        #expect(broken[0].epoch != after[0].epoch && broken[0].offset == 3)
        let page = try await store.read(room, since: 2, epoch: after[0].epoch, limit: 100)
        #expect(!page.complete && page.messages.map(\.offset) == [3])
    }

    @Test func historyExpiresWithItsTTLAndAStreamWithoutHistoryIsEmpty() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (store, redis) = makeStore(server)
        let room = HistoryStream.room("live://ttl")
        _ = try await append(store, room, ids: ["x"], ttl: .seconds(30))
        let ttl = try await redis.send(RedisCommand("PTTL", [.string(room.logKey)]))
        #expect((ttl.int ?? 0) > 25_000 && (ttl.int ?? 0) <= 30_000)
        let none = try await store.read(.room("live://never"), since: 0, epoch: "", limit: 10)
        #expect(none.epoch.isEmpty && none.top == 0 && none.messages.isEmpty && none.complete)
        #expect(try await store.read(.room("live://never"), since: 3, epoch: "abc", limit: 10).complete == false)
        // Mids are streams too, with their own keys.
        let user = try await append(store, .mid(42), ids: ["u1"])
        #expect(user[0].offset == 1)
        #expect(HistoryStream.mid(42).metaKey == "hist:{mid:42}:meta")
    }

    @Test func aReaderBeforeTheFirstMessageLearnsTheEpochTheMessagesGet() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (store, _) = makeStore(server)
        let room = HistoryStream.room("live://early")
        let limits = HistoryLimits(size: 10, ttl: .seconds(60))
        let early = try await store.read(room, since: 0, epoch: "", limit: 0, startingWith: limits)
        #expect(early.epoch.count == 16 && early.top == 0)
        let stamps = try await append(store, room, ids: ["e1", "e2"], size: 10)
        #expect(stamps.map(\.epoch) == [early.epoch, early.epoch] && stamps.map(\.offset) == [1, 2])
        let page = try await store.read(room, since: 0, epoch: early.epoch, limit: 10, startingWith: limits)
        #expect(page.complete && page.messages.map(\.offset) == [1, 2])
    }

    @Test func bodiesKeepEveryByte() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (store, _) = makeStore(server)
        let body = ByteBuffer(bytes: [0, 58, 255, 10, 13, 58, 0])
        let request = HistoryStore.Append(
            stream: .room("bin://1"), messageID: "b", operation: -7, body: body, limits: HistoryLimits(size: 5, ttl: .seconds(5)))
        _ = try await store.append([request])[0].get()
        let page = try await store.read(.room("bin://1"), since: 0, epoch: "", limit: 5)
        #expect(page.messages == [HistoryMessage(offset: 1, operation: -7, body: body)])
    }

    @Test func anUnreachableStoreFailsEachAppendInPlace() async throws {
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: 1, connectTimeout: .milliseconds(200)))
        let store = HistoryStore(redis: redis)
        let results = await store.append([
            HistoryStore.Append(stream: .room("a://1"), messageID: "1", operation: 1, body: ByteBuffer(), limits: HistoryLimits(size: 1, ttl: .seconds(1)))
        ])
        guard case .failure(.unavailable) = results[0] else {
            Issue.record("expected unavailable, got \(results)")
            return
        }
    }
}
