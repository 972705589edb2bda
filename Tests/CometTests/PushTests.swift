import Foundation
import GRPCCore
import GoIMClient
import GoIMProtocol
import GoIMRPC
import NIOCore
import Synchronization
import TestLogic
import Testing

@testable import Comet

extension CometSuite {
    @Suite("Pushes: keys, rooms, broadcast, room changes, watch sets")
    struct PushTests {
        @Test("PushMsg reaches only the keys' connections watching the op; unknown keys do not stop it")
        func pushByKey() async throws {
            try await withComet { comet in
                let a = try await comet.client(auth: auth(mid: 1, key: "a", accepts: [1000]))
                let b = try await comet.client(auth: auth(mid: 2, key: "b", accepts: [1001]))
                let c = try await comet.client(.webSocket(), auth: auth(mid: 3, key: "c", accepts: [1000, 1002]))
                let d = try await comet.client(auth: auth(mid: 4, key: "d", accepts: [1000]))

                try await comet.pushKeys(["a", "b", "nobody", "c"], operation: 1000, body: "first")
                #expect(try await a.receiveBodies() == ["first"])
                let atC = try await c.receive()
                #expect(atC.map { String(buffer: $0.packet.body) } == ["first"])
                #expect(atC[0].inEnvelope)  // WebSocket: one op 9 envelope frame
                #expect(atC[0].packet.operation == 1000)

                // b (not watching) and d (not listed) got nothing: their first packet is the next one.
                try await comet.pushKeys(["b"], operation: 1001, body: "for-b")
                try await comet.pushKeys(["d"], operation: 1000, body: "for-d")
                #expect(try await b.receiveBodies() == ["for-b"])
                #expect(try await d.receiveBodies() == ["for-d"])
            }
        }

        @Test("PushMsg, Broadcast and BroadcastRoom reject bad arguments with goim's messages")
        func rpcArgumentErrors() async throws {
            try await withComet { comet in
                await #expect {
                    _ = try await comet.rpc.pushMsg(Goim_Comet_PushMsgReq())
                } throws: { error in
                    (error as? RPCError)?.message == "rpc pushmsg arg error" && (error as? RPCError)?.code == .unknown
                }
                await #expect {
                    _ = try await comet.rpc.broadcast(Goim_Comet_BroadcastReq())
                } throws: { error in
                    (error as? RPCError)?.message == "rpc broadcast arg error"
                }
                var room = Goim_Comet_BroadcastRoomReq()
                room.proto = Envelope.proto(operation: 1000, bodies: ["x"])
                await #expect {
                    _ = try await comet.rpc.broadcastRoom(room)
                } throws: { error in
                    (error as? RPCError)?.message == "rpc broadcast  room arg error"
                }
            }
        }

        @Test("BroadcastRoom to 1,000 clients (TCP and WebSocket, both event loops): each gets each message exactly once, in order")
        func roomBroadcastToThousand() async throws {
            try await withComet { comet in
                let clientCount = 1000
                let messages = 3
                let tally = Tally(clients: clientCount)
                let clients = try await withThrowingTaskGroup(of: GoIMClient.self) { group in
                    var clients: [GoIMClient] = []
                    for index in 0..<clientCount {
                        if index >= 64 { clients.append(try await group.next()!) }
                        group.addTask {
                            let transport: GoIMClient.Transport = index % 2 == 0 ? .tcp : .webSocket()
                            return try await comet.client(
                                transport,
                                auth: auth(mid: Int64(index), key: "fan-\(index)", room: "live://fan"),
                                delivery: .handler { received in tally.record(client: index, body: String(buffer: received.packet.body)) })
                        }
                    }
                    while let client = try await group.next() { clients.append(client) }
                    return clients
                }
                try await comet.waitForStatistics { $0.connections == clientCount }
                let ready = try await clients[0].heartbeat()
                #expect(ready == Int32(clientCount))

                for message in 0..<messages {
                    try await comet.broadcastRoom("live://fan", body: "m\(message)")
                }
                try await tally.wait(total: clientCount * messages)
                // A straggling duplicate would arrive right behind the last message: send a marker and re-check.
                try await comet.broadcastRoom("live://fan", body: "end")
                try await tally.wait(total: clientCount * (messages + 1))
                let expected = (0..<messages).map { "m\($0)" } + ["end"]
                #expect(tally.allReceived(expected))
                #expect(await comet.statistics().delivered == clientCount * (messages + 1))
                _ = clients  // closed by the comet's shutdown, concurrently
            }
        }

        @Test("Broadcast reaches every watching connection; speed paces it")
        func broadcastWithSpeed() async throws {
            try await withComet { comet in
                let tally = Tally(clients: 30)
                var clients: [GoIMClient] = []
                for index in 0..<30 {
                    clients.append(try await comet.client(
                        index % 3 == 0 ? .webSocket() : .tcp,
                        auth: auth(mid: Int64(index), key: "bc-\(index)", accepts: index < 20 ? [1000] : [2000]),
                        delivery: .handler { tally.record(client: index, body: String(buffer: $0.packet.body)) }))
                }
                var request = Goim_Comet_BroadcastReq()
                request.protoOp = 1000
                request.proto = Envelope.proto(operation: 1000, bodies: ["now"])
                _ = try await comet.rpc.broadcast(request)
                try await tally.wait(total: 20)

                // 20 recipients at 40 per second take about half a second; the RPC itself returns at once.
                request.speed = 40
                request.proto = Envelope.proto(operation: 1000, bodies: ["paced"])
                let started = ContinuousClock.now
                _ = try await comet.rpc.broadcast(request)
                #expect(tally.total < 40)  // the RPC returned before the paced delivery finished
                try await tally.wait(total: 40)
                #expect(ContinuousClock.now - started >= .milliseconds(300))

                // Non-watchers got nothing: their first packet is this key push.
                try await comet.pushKeys(["bc-25"], operation: 2000, body: "marker")
                try await tally.wait(total: 41)
                #expect(tally.bodies(of: 25) == ["marker"])
                #expect((0..<20).allSatisfy { tally.bodies(of: $0) == ["now", "paced"] })
                for client in clients { await client.close() }
            }
        }

        @Test("ChangeRoom: op 13 echoes the body; messages follow the room; changing to one's own room keeps it (goim bug 13)")
        func changeRoom() async throws {
            try await withComet { comet in
                let client = try await comet.client(auth: auth(key: "mover", room: "live://a"))
                let reply = try await client.request(
                    Packet(version: 1, operation: .changeRoom, sequence: 9, body: ByteBuffer(string: "live://b")),
                    replyOperation: .changeRoomReply)
                #expect(String(buffer: reply.body) == "live://b")
                #expect(reply.sequence == 9)
                try await comet.broadcastRoom("live://a", body: "to-a")
                try await comet.broadcastRoom("live://b", body: "to-b")
                #expect(try await client.receiveBodies() == ["to-b"])

                // Alone in live://b, "change" to live://b: still a member.
                _ = try await client.request(
                    Packet(operation: .changeRoom, body: ByteBuffer(string: "live://b")), replyOperation: .changeRoomReply)
                try await comet.broadcastRoom("live://b", body: "still")
                #expect(try await client.receiveBodies() == ["still"])
                #expect(try await client.heartbeat() == 1)

                // Leaving every room: the heartbeat shows 0, not the last room's count (goim bug 11).
                _ = try await client.request(Packet(operation: .changeRoom), replyOperation: .changeRoomReply)
                #expect(try await client.heartbeat() == 0)
                let rooms = try await comet.rpc.rooms(Goim_Comet_RoomsReq())
                #expect(rooms.rooms.isEmpty)
            }
        }

        @Test("Sub/Unsub change the watch set (replies echo the body); a bad list changes nothing; rooms ignore it")
        func subUnsub() async throws {
            try await withComet { comet in
                let client = try await comet.client(.webSocket(), auth: auth(key: "watcher", room: "live://w", accepts: [1000]))
                let sub = try await client.request(
                    Packet(operation: .sub, sequence: 4, body: ByteBuffer(string: "1001,1002")), replyOperation: .subReply)
                #expect(String(buffer: sub.body) == "1001,1002")
                #expect(sub.sequence == 4)
                try await comet.pushKeys(["watcher"], operation: 1001, body: "1001")
                #expect(try await client.receiveBodies() == ["1001"])

                let unsub = try await client.request(
                    Packet(operation: .unsub, body: ByteBuffer(string: "1000")), replyOperation: .unsubReply)
                #expect(String(buffer: unsub.body) == "1000")
                _ = try await client.request(Packet(operation: .unsub, body: ByteBuffer(string: "1001,x")), replyOperation: .unsubReply)
                try await comet.pushKeys(["watcher"], operation: 1000, body: "unwatched")
                try await comet.pushKeys(["watcher"], operation: 1001, body: "still-watched")
                // Room messages ignore the watch set (goim bug 18, kept).
                try await comet.broadcastRoom("live://w", operation: 5000, body: "room")
                #expect(try await client.receiveBodies(2) == ["still-watched", "room"])
            }
        }

        @Test("Rooms lists the rooms with members on this comet")
        func roomsRPC() async throws {
            try await withComet { comet in
                let a = try await comet.client(auth: auth(key: "r1", room: "live://1"))
                let b = try await comet.client(.webSocket(), auth: auth(key: "r2", room: "live://2"))
                _ = try await comet.client(auth: auth(key: "r3"))
                #expect(try await comet.rpc.rooms(Goim_Comet_RoomsReq()).rooms == ["live://1": true, "live://2": true])
                await a.close()
                try await comet.waitForStatistics { $0.rooms == 1 }
                #expect(try await comet.rpc.rooms(Goim_Comet_RoomsReq()).rooms == ["live://2": true])
                await b.close()
            }
        }

        @Test("a batched envelope (20 inner packets) reaches TCP as 20 packets and WebSocket as one envelope")
        func batchedEnvelope() async throws {
            try await withComet { comet in
                let tcp = try await comet.client(auth: auth(key: "batch-tcp", room: "live://batch"))
                let ws = try await comet.client(.webSocket(), auth: auth(key: "batch-ws", room: "live://batch"))
                let bodies = (0..<20).map { "{\"test\":\($0)}" }
                var request = Goim_Comet_BroadcastRoomReq()
                request.roomID = "live://batch"
                request.proto = Envelope.proto(operation: 1000, bodies: bodies)
                _ = try await comet.rpc.broadcastRoom(request)
                let atTCP = try await tcp.receive(20)
                let atWS = try await ws.receive(20)
                #expect(atTCP.map { String(buffer: $0.packet.body) } == bodies)
                #expect(atWS.map { String(buffer: $0.packet.body) } == bodies)
                #expect(atTCP.allSatisfy { !$0.inEnvelope && $0.packet.operation == 1000 })
                #expect(atWS.allSatisfy { $0.inEnvelope && $0.packet.operation == 1000 })
            }
        }
    }
}

/// Counts what many clients received; lets a test await a total.
final class Tally: Sendable {
    private struct State {
        var bodies: [[String]]
        var total = 0
        var waiters: [(Int, CheckedContinuation<Void, any Error>)] = []
    }

    private let state: Mutex<State>

    init(clients: Int) {
        state = Mutex(State(bodies: Array(repeating: [], count: clients)))
    }

    func record(client: Int, body: String) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.bodies[client].append(body)
            state.total += 1
            var ready: [CheckedContinuation<Void, any Error>] = []
            let total = state.total
            state.waiters.removeAll { waiter in
                if waiter.0 <= total {
                    ready.append(waiter.1)
                    return true
                }
                return false
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    var total: Int { state.withLock { $0.total } }

    func bodies(of client: Int) -> [String] { state.withLock { $0.bodies[client] } }

    func allReceived(_ expected: [String]) -> Bool { state.withLock { $0.bodies.allSatisfy { $0 == expected } } }

    func wait(total target: Int, timeout: Duration = .seconds(20)) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let done = self.state.withLock { state -> Bool in
                        if state.total >= target { return true }
                        state.waiters.append((target, continuation))
                        return false
                    }
                    if done { continuation.resume() }
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("timed out at \(self.total) of \(target) deliveries")
            }
            do {
                try await group.next()
            } catch {
                // Release the waiter so the group can end.
                self.failWaiters(error)
                throw error
            }
            group.cancelAll()
        }
    }

    private func failWaiters(_ error: any Error) {
        let waiters = state.withLock { state in
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.1.resume(throwing: error) }
    }
}
