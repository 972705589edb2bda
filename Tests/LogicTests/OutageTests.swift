import Foundation
import Synchronization
import GRPCCore
import GoIMConfig
import GoIMRPC
import TestSupport
import Testing

@testable import Logic

/// Redis or NATS going away: never a silent success, and recovery once they are back.
@Suite("Outages", .startsServers)
struct OutageTests {
    @Test("Redis stopped mid-test gives -500 with a message, and Logic recovers after the restart")
    func redisOutage() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            try await h.server.core.routing.addMapping(mid: 1, key: "r1", server: a)
            #expect(try await h.post("/goim/push/keys?operation=1&keys=r1", "x").body == HTTPPushTests.ok)

            await h.redisServer.stop()
            for uri in ["/goim/push/keys?operation=1&keys=r1", "/goim/push/mids?operation=1&mids=1"] {
                let reply = try await h.post(uri, "x")
                #expect(reply.status == 200)  // goim sends -500 with HTTP 200
                #expect(reply.body.hasPrefix(#"{"code":-500,"message":"redis unavailable: "#), "\(reply.body)")
            }
            await #expect(throws: RPCError.self) {
                try await h.withLogicClient { client in
                    var request = Goim_Logic_HeartbeatReq()
                    request.key = "r1"
                    request.server = a
                    _ = try await client.heartbeat(request)
                }
            }

            try await h.redisServer.start()
            try await waitUntil("Redis to be used again") {
                try await h.post("/goim/push/keys?operation=1&keys=r1", "x").body == HTTPPushTests.ok
            }
            // the data did not survive (persistence off): the session is recreated by a heartbeat
            try await h.withLogicClient { client in
                var request = Goim_Logic_HeartbeatReq()
                request.mid = 1
                request.key = "r1"
                request.server = a
                _ = try await client.heartbeat(request)
            }
            #expect(try await h.command("GET", "key_r1").string == a)
        }
    }

    @Test("NATS down gives -500 with a message; pushes work again after NATS is back")
    func natsOutage() async throws {
        try await LogicHarness.run { h in
            #expect(try await h.post("/goim/push/room?operation=1&type=live&room=1", "x").body == HTTPPushTests.ok)
            await h.natsServer.stop()
            try await waitUntil("the queue to notice") { !h.server.queue.isConnected }
            let reply = try await h.post("/goim/push/room?operation=1&type=live&room=1", "x")
            #expect(reply.status == 200)
            #expect(reply.body.hasPrefix(#"{"code":-500,"message":"nats unavailable: "#), "\(reply.body)")
            let all = try await h.post("/goim/push/all?operation=1", "x")
            #expect(all.body.hasPrefix(#"{"code":-500,"message":"nats unavailable: "#))
            let health = try await h.get("/ready")
            #expect(health.status == 503)
            #expect(health.body.contains(#""redis":"ok","nats":"nats unavailable: "#))

            try await h.natsServer.start()
            try await waitUntil("NATS to be used again", timeout: .seconds(15)) {
                try await h.post("/goim/push/room?operation=1&type=live&room=1", "x").body == HTTPPushTests.ok
            }
            #expect(try await h.get("/ready").status == 200)
        }
    }

    @Test("The push stream deleted under logic (a nats-server that lost its store): the next push creates it again and is stored")
    func streamDeleted() async throws {
        try await LogicHarness.run { h in
            #expect(try await h.post("/goim/push/room?operation=1&type=live&room=1", "x").body == HTTPPushTests.ok)
            let deleted = try NATSCluster.request("$JS.API.STREAM.DELETE.\(h.configuration.nats.stream)", port: h.natsServer.port)
            #expect(deleted.contains(#""success":true"#), "\(deleted)")
            #expect(try await h.post("/goim/push/room?operation=1&type=live&room=1", "y").body == HTTPPushTests.ok)
            let info = try NATSCluster.request("$JS.API.STREAM.INFO.\(h.configuration.nats.stream)", port: h.natsServer.port)
            #expect(info.contains(#""messages":1"#), "only the push after the deletion is in the new stream: \(info)")
        }
    }

    @Test("While NATS does not ack, pushes beyond nats.maxPendingPublishes are refused at once; the waiting ones finish when it acks")
    func boundedPendingPublishes() async throws {
        let queue = StalledQueue()
        let core = LogicCore(
            routing: FixedRouting(), online: NoOnline(), queue: queue, authenticator: GoIMAuthenticator(),
            cluster: ClusterState(node: LogicConfiguration().node, backoff: LogicConfiguration().backoff, regions: [:]),
            sessionHeartbeat: .seconds(480), logger: .init(label: "t"), maxPendingPublishes: 2)
        let waiting = (0..<2).map { index in
            Task { try await core.pushRoom(operation: 1, type: "live", room: "\(index)", message: Data()) }
        }
        try await waitUntil("two publishes waiting") { queue.waiting.withLock { $0.count } == 2 }
        await #expect(throws: LogicError.queueOverloaded(limit: 2)) {
            try await core.pushAll(operation: 1, speed: 0, message: Data())
        }
        let response = LogicHTTPResponder.failure(.queueOverloaded(limit: 2))
        #expect(response.status == .serviceUnavailable)
        #expect(response.headers[.retryAfter] == "1")
        queue.release()
        for task in waiting { try await task.value }
        // Room again: the next one waits instead of being refused.
        let next = Task { try await core.pushAll(operation: 1, speed: 0, message: Data()) }
        try await waitUntil("the next publish waiting") { queue.waiting.withLock { $0.count } == 1 }
        queue.release()
        try await next.value
    }

    @Test("Pushes to several comets report the comets whose group failed")
    func partialFailure() async throws {
        let queue = FlakyQueue(failing: ["b"])
        let core = LogicCore(
            routing: FixedRouting(), online: NoOnline(), queue: queue, authenticator: GoIMAuthenticator(),
            cluster: ClusterState(node: LogicConfiguration().node, backoff: LogicConfiguration().backoff, regions: [:]), sessionHeartbeat: .seconds(480),
            logger: .init(label: "t"))
        do {
            try await core.pushKeys(operation: 1, keys: ["ka", "kb"], message: Data())
            Issue.record("the push should have failed")
        } catch let error as LogicError {
            #expect(error == .partialPush(failed: ["b"], reason: "boom"))
            #expect(error.message == "nats unavailable: push to 1 comet(s) failed (b): boom")
        }
        #expect(queue.published.withLock { $0.map(\.server) } == ["a"])
    }
}

/// A queue whose publishes wait until released (NATS that does not ack).
final class StalledQueue: PushQueue {
    let waiting = Synchronization.Mutex<[CheckedContinuation<Void, Never>]>([])

    func publish(_ message: Goim_Logic_PushMsg, id: String) async throws {
        await withCheckedContinuation { continuation in waiting.withLock { $0.append(continuation) } }
    }

    func release() {
        for continuation in waiting.withLock({ list in defer { list = [] }; return list }) { continuation.resume() }
    }

    func publishUpstream(_ request: Goim_Logic_ReceiveReq) async throws {}
    func ping() async throws {}
}

/// Test doubles for the one test that needs a queue failing for one comet only.
final class FlakyQueue: PushQueue {
    let failing: Set<String>
    let published = Synchronization.Mutex<[Goim_Logic_PushMsg]>([])

    init(failing: Set<String>) { self.failing = failing }

    func publish(_ message: Goim_Logic_PushMsg, id: String) async throws {
        if failing.contains(message.server) { throw LogicError.queueUnavailable("boom") }
        published.withLock { $0.append(message) }
    }

    func publishUpstream(_ request: Goim_Logic_ReceiveReq) async throws {}
    func ping() async throws {}
}

struct FixedRouting: RoutingStore {
    func addMapping(mid: Int64, key: String, server: String) async throws {}
    func refreshMapping(mid: Int64, key: String, server: String) async throws -> Bool { true }
    func deleteMapping(mid: Int64, key: String, server: String) async throws -> Bool { true }
    func servers(forKeys keys: [String]) async throws -> [String?] { keys.map { String($0.dropFirst()) } }
    func sessions(forMids mids: [Int64]) async throws -> [Session] { [] }
    func ping() async throws {}
    func keysHeldByOthers(_ sessions: [Session]) async throws -> [Bool] { sessions.map { _ in false } }
    func purgeSessions(server: String, batch: Int, stillGone: @Sendable () async throws -> Bool) async throws -> Int { 0 }
}

struct NoOnline: OnlineStore {
    func storeOnline(_ online: ServerOnline) async throws {}
    func loadOnline(servers: [String]) async throws -> [ServerOnline?] { servers.map { _ in nil } }
    func deleteOnline(servers: [String]) async throws {}
}
