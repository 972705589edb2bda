import Foundation
import GoIMProtocol
import GoIMRPC
import NIOCore
import NIOEmbedded
import TestLogic
import LogicClient
import Testing

@testable import Comet

extension CometSuite {
    @Suite("Buckets, rooms and encodings without sockets")
    struct StructureTests {
        @Test("RoomDirectory stays consistent under concurrent joins and leaves from many tasks")
        func roomDirectoryHammer() async {
            let directory = RoomDirectory(shardCount: 4)
            await withTaskGroup(of: Void.self) { group in
                for task in 0..<32 {
                    group.addTask {
                        var held: [RoomInfo] = []
                        for step in 0..<2000 {
                            let room = "room-\((task + step) % 13)"
                            held.append(directory.join(room))
                            if step % 3 != 0, !held.isEmpty {
                                directory.leave(held.removeFirst())
                            }
                        }
                        for info in held { directory.leave(info) }
                    }
                }
            }
            #expect(directory.counts().isEmpty)
            for id in (0..<13).map({ "room-\($0)" }) { #expect(directory.info(for: id) == nil) }
        }

        @Test("RoomDirectory: counts, cluster counts, leave-and-rejoin of an emptied room (goim bugs 13/14)")
        func roomDirectoryCounts() {
            let directory = RoomDirectory()
            let a1 = directory.join("a")
            let a2 = directory.join("a")
            #expect(a1 === a2)
            #expect(directory.counts() == ["a": 2])
            #expect(a1.reportedOnline == 2)
            directory.updateAllOnline(["a": 10, "z": 3])
            #expect(a1.reportedOnline == 10)
            directory.updateAllOnline([:])
            #expect(a1.reportedOnline == 2)
            directory.leave(a1)
            directory.leave(a2)
            #expect(directory.info(for: "a") == nil)
            let again = directory.join("a")
            #expect(again !== a1)
            #expect(again.online.load(ordering: .relaxed) == 1)
        }

        @Test("Buckets: replacement returns the old entry; a replaced connection cannot remove its successor; concurrent use stays consistent")
        func bucketsHammer() async throws {
            let buckets = Buckets(size: 8)
            let loop = EmbeddedEventLoop()
            // Entries need a handler bound to a loop; the handler is never touched here.
            let comet = try makeOfflineComet()
            let entries: [BucketEntry] = (0..<4).map { id in
                let channel = EmbeddedChannel(loop: loop)
                let handler = ConnectionHandler(
                    comet: comet, loop: LoopState(eventLoop: loop, counters: comet.counters), channel: channel, id: UInt64(id),
                    transport: .tcp, ip: "1.2.3.4", deadline: .distantFuture)
                return BucketEntry(id: UInt64(id), handler: NIOLoopBound(handler, eventLoop: loop))
            }
            #expect(buckets.put(key: "k", entry: entries[0]) == nil)
            #expect(buckets.put(key: "k", entry: entries[1])?.id == 0)
            #expect(!buckets.remove(key: "k", id: 0))  // the replaced one
            #expect(buckets.entry(for: "k")?.id == 1)
            #expect(buckets.remove(key: "k", id: 1))
            #expect(buckets.count == 0)

            await withTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        for step in 0..<3000 {
                            let key = "key-\(step % 50)"
                            let entry = entries[(task + step) % entries.count]
                            _ = buckets.put(key: key, entry: entry)
                            _ = buckets.remove(key: key, id: entry.id)
                        }
                    }
                }
            }
            // Whatever is left maps each key to one entry; clearing by the holders' ids empties everything.
            for bucket in buckets.buckets {
                for (key, entry) in bucket.entries.withLock({ $0 }) { #expect(buckets.remove(key: key, id: entry.id)) }
            }
            #expect(buckets.count == 0)
            try await comet.group.shutdownGracefully()
        }

        @Test("IPTable: limits and concurrent acquire/release")
        func ipTable() async {
            let table = IPTable()
            #expect(table.acquire("a", limit: 2))
            #expect(table.acquire("a", limit: 2))
            #expect(!table.acquire("a", limit: 2))
            #expect(table.acquire("b", limit: 0))
            #expect(table.distinctCount == 2)
            table.release("a")
            table.release("a")
            table.release("b")
            #expect(table.distinctCount == 0)
            await withTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        for step in 0..<2000 {
                            let ip = "10.0.0.\((task + step) % 7)"
                            if table.acquire(ip, limit: 0) { table.release(ip) }
                        }
                    }
                }
            }
            #expect(table.distinctCount == 0)
        }

        @Test("Push encodes once per transport: TCP gets the envelope body, WebSocket one frame with the outer header")
        func pushEncoding() {
            let proto = Envelope.proto(operation: 1000, bodies: ["hello"])
            let push = Push(proto: proto)
            #expect(Array(push.tcp.readableBytesView).hex == "0000001500100001000003e80000000068656c6c6f")
            #expect(Array(push.webSocket.readableBytesView).hex
                == "8225" + "00000025001000010000000900000000" + "0000001500100001000003e80000000068656c6c6f")

            let copy = push.copy()
            #expect(copy.tcp == push.tcp)
            #expect(copy.webSocket == push.webSocket)

            var plain = Goim_Protocol_Proto(version: 1, operation: 1000, sequence: 0, body: Array("hi".utf8))
            plain.seq = 3
            let single = Push(proto: plain)
            #expect(Array(single.tcp.readableBytesView).hex == "0000001200100001000003e8000000036869")
            #expect(Array(single.webSocket.readableBytesView).hex == "8212" + "0000001200100001000003e8000000036869")
            #expect(single.copy().tcp == single.tcp)

            // 16-bit and 64-bit WebSocket lengths.
            let medium = Push(proto: Goim_Protocol_Proto(operation: 1000, body: Array(repeating: 1, count: 200)))
            #expect(Array(medium.webSocket.readableBytesView.prefix(4)) == [0x82, 126, 0, 216])
            let large = Push(proto: Goim_Protocol_Proto(operation: 1000, body: Array(repeating: 1, count: 70_000)))
            #expect(Array(large.webSocket.readableBytesView.prefix(10)) == [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x80])
        }

        @Test("replies: heartbeat reply and echo packets for both transports")
        func replyEncoding() {
            let allocator = ByteBufferAllocator()
            let tcp = Wire.heartbeatReply(online: 1, version: 1, sequence: 1, transport: .tcp, allocator: allocator)
            #expect(Array(tcp.readableBytesView).hex == "0000001400100001000000030000000100000001")
            let ws = Wire.heartbeatReply(online: 1, version: 1, sequence: 1, transport: .webSocket, allocator: allocator)
            #expect(Array(ws.readableBytesView).hex == "8214" + "0000001400100001000000030000000100000001")
            let echo = Wire.packet(
                operation: .changeRoomReply, version: 1, sequence: 2, body: ByteBuffer(string: "r"), transport: .tcp,
                allocator: allocator)
            #expect(Array(echo.readableBytesView).hex == "00000011001000010000000d0000000272")
        }
    }
}

/// A `Comet` with a Logic that is never called, for structure tests.
func makeOfflineComet() throws -> Comet {
    struct NoLogic: LogicAPI {
        func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply { throw TestFailure("offline") }
        func disconnect(mid: Int64, key: String, server: String) async throws {}
        func heartbeat(mid: Int64, key: String, server: String) async throws {}
        func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32] { [:] }
        func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws {}
        func refreshToken(mid: Int64, key: String, server: String, token: Data) async throws -> Int64 { throw TestFailure("offline") }
    }
    return try Comet(
        configuration: .init(), group: .init(numberOfThreads: 1), logic: NoLogic(), logger: testLogger,
        sweepInterval: .seconds(1), disconnectConcurrency: 4)
}

