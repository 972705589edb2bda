import Foundation
import GoIMClient
import GoIMProtocol
import Synchronization
import StackHarness
import Testing

/// End to end: the built `comet`, `logic` and `job` executables as separate processes with a real redis-server and
/// nats-server, goim clients over TCP and WebSocket, and pushes through logic's HTTP API. Serialized: each test runs
/// a cluster of up to eight processes, and two clusters at once would only compete for the CPU.
// A time limit: a test that hangs (a process that never answers) fails instead of stalling CI.
@Suite("stack: comet, logic and job processes", .serialized, .startsServers)
struct StackTests {
    @Test("TCP and WebSocket clients authenticate, heartbeat, and receive pushes from every push route")
    func pushRoutes() async throws {
        try await Stack.run { stack in
            let comet = stack.comets[0]
            let tcp = try await Member.connect("tcp", to: comet, webSocket: false, mid: 101, room: "live://1000", accepts: [1000, 1001])
            let ws = try await Member.connect("ws", to: comet, webSocket: true, mid: 102, room: "live://1000", accepts: [1000])
            defer { Task { await tcp.close(); await ws.close() } }

            // Heartbeat: op 3 carries the room's online count; both members are in live://1000.
            try await eventually("both heartbeats report 2 online") {
                let (viaTCP, viaWS) = (try await tcp.client.heartbeat(), try await ws.client.heartbeat())
                return viaTCP == 2 && viaWS == 2
            }

            try await stack.push("/goim/push/keys?operation=1000&keys=\(tcp.key)&keys=\(ws.key)", "by-keys")
            let viaTCP = try await tcp.receive("by-keys")
            let viaWS = try await ws.receive("by-keys")
            #expect(viaTCP == Member.Push(operation: 1000, body: "by-keys", inEnvelope: false))
            #expect(viaWS == Member.Push(operation: 1000, body: "by-keys", inEnvelope: true))

            // Mid pushes and broadcasts honour the watch set (accepts): ws does not accept 1001.
            try await stack.push("/goim/push/mids?operation=1001&mids=101&mids=102", "by-mids-1001")
            try await stack.push("/goim/push/mids?operation=1000&mids=101&mids=102", "by-mids-1000")
            try await tcp.receive("by-mids-1001")
            try await tcp.receive("by-mids-1000")
            try await ws.receive("by-mids-1000")

            // Room pushes ignore the watch set: both get op 1002.
            try await stack.push("/goim/push/room?operation=1002&type=live&room=1000", "to-room")
            #expect(try await tcp.receive("to-room").operation == 1002)
            #expect(try await ws.receive("to-room") == Member.Push(operation: 1002, body: "to-room", inEnvelope: true))
            try await stack.push("/goim/push/room?operation=1000&type=live&room=9999", "other-room")

            try await stack.push("/goim/push/all?operation=1001", "to-all-1001")
            try await stack.push("/goim/push/all?operation=1000", "to-all")
            try await tcp.receive("to-all-1001")
            try await tcp.receive("to-all")
            try await ws.receive("to-all")

            // Everything above has been delivered; what ws must not get has had the same time to arrive.
            try await stack.push("/goim/push/keys?operation=1000&keys=\(ws.key)", "sentinel")
            try await ws.receive("sentinel")
            #expect(ws.count(of: "by-mids-1001") == 0)
            #expect(ws.count(of: "to-all-1001") == 0)
            #expect(tcp.count(of: "other-room") == 0 && ws.count(of: "other-room") == 0)
            for body in ["by-keys", "by-mids-1000", "to-room", "to-all"] {
                #expect(tcp.count(of: body) == 1, "tcp got \(body) \(tcp.count(of: body)) times")
                #expect(ws.count(of: body) == 1, "ws got \(body) \(ws.count(of: body)) times")
            }

            // Online counts reach logic (comet RenewOnline → Redis → logic's refresh).
            try await eventually("online/room counts 2 in live://1000") {
                try await stack.get("/goim/online/room?type=live&rooms=1000&rooms=2000").body
                    == #"{"code":0,"message":"","data":{"1000":2,"2000":0}}"#
            }
            #expect(
                try await stack.get("/goim/online/top?type=live&limit=5").body
                    == #"{"code":0,"message":"","data":[{"room_id":"1000","count":2}]}"#)
            try await eventually("online/total counts 2 connections") {
                try await stack.get("/goim/online/total").body == #"{"code":0,"message":"","data":{"conn_count":2,"ip_count":1}}"#
            }

            // A client that leaves is no longer counted.
            await ws.close()
            try await eventually("online/total counts 1 connection after ws left") {
                try await stack.get("/goim/online/total").body == #"{"code":0,"message":"","data":{"conn_count":1,"ip_count":1}}"#
            }
            #expect(try await tcp.client.heartbeat() >= 1)
        }
    }

    @Test("Two comets, two jobs, two logics: mid pushes cross comets, rooms span comets exactly once, online and nodes see both")
    func cluster() async throws {
        var options = Stack.Options()
        (options.logics, options.comets, options.jobs) = (2, 2, 2)
        try await Stack.run(options) { stack in
            let (a, b) = (stack.comets[0], stack.comets[1])
            let a1 = try await Member.connect("a1", to: a, webSocket: false, mid: 201, room: "live://2000")
            let a2 = try await Member.connect("a2", to: a, webSocket: true, mid: 202, room: "live://2000")
            let b1 = try await Member.connect("b1", to: b, webSocket: true, mid: 203, room: "live://2000")
            let b2 = try await Member.connect("b2", to: b, webSocket: false, mid: 204, room: "live://3000")
            let members = [a1, a2, b1, b2]
            defer { Task { for member in members { await member.close() } } }

            // A user on comet B, pushed through the logic comet A talks to, and the other way round.
            try await stack.push("/goim/push/mids?operation=1000&mids=203", "mid-to-b1", logic: 0)
            try await stack.push("/goim/push/mids?operation=1000&mids=201", "mid-to-a1", logic: 1)
            try await b1.receive("mid-to-b1")
            try await a1.receive("mid-to-a1")

            // A room with members on both comets: every message exactly once per member; b2 (another room) none.
            let roomMessages = (0..<10).map { "room-2000-\($0)" }
            for (index, message) in roomMessages.enumerated() {
                try await stack.push("/goim/push/room?operation=1000&type=live&room=2000", message, logic: index % 2)
            }
            for member in [a1, a2, b1] { try await member.receiveAll(roomMessages) }

            try await stack.push("/goim/push/all?operation=1000", "to-everyone", logic: 1)
            for member in members { try await member.receive("to-everyone") }

            // Late duplicates would have had the time the broadcast took; then count.
            for member in [a1, a2, b1] {
                for message in roomMessages {
                    #expect(member.count(of: message) == 1, "\(member.name) got \(message) \(member.count(of: message)) times")
                }
            }
            #expect(b2.bodies.allSatisfy { !$0.hasPrefix("room-2000") })
            #expect(b1.count(of: "mid-to-a1") == 0 && a1.count(of: "mid-to-b1") == 0)
            #expect(a2.count(of: "mid-to-b1") == 0)

            // Both logics see both comets: instances, nodes, connection totals and room counts.
            try await stack.waitForInstances(["comet-a", "comet-b"])
            for logic in 0..<2 {
                try await eventually("logic \(logic + 1) counts 4 connections") {
                    try await stack.get("/goim/online/total", logic: logic).body
                        == #"{"code":0,"message":"","data":{"conn_count":4,"ip_count":2}}"#
                }
                try await eventually("logic \(logic + 1) counts rooms 2000 and 3000 on both comets") {
                    try await stack.get("/goim/online/room?type=live&rooms=2000&rooms=3000", logic: logic).body
                        == #"{"code":0,"message":"","data":{"2000":3,"3000":1}}"#
                }
                let weighted = try await stack.get("/goim/nodes/weighted?platform=web", logic: logic)
                let nodes = (weighted.json?["data"] as? [String: Any])?["nodes"] as? [String]
                #expect(Set(nodes ?? []) == ["comet-a.goim.io", "comet-b.goim.io"], "\(weighted.body)")
            }
        }
    }

    @Test("A comet killed with SIGKILL: its users' pushes are dropped cleanly, the rest keeps working; it restarts and clients receive again")
    func cometKilled() async throws {
        var options = Stack.Options()
        options.comets = 2
        try await Stack.run(options) { stack in
            let (a, b) = (stack.comets[0], stack.comets[1])
            let job = stack.jobs[0]
            let onA = try await Member.connect("onA", to: a, webSocket: false, mid: 301, room: "live://4000")
            let onB = try await Member.connect("onB", to: b, webSocket: true, mid: 302, room: "live://4000")
            defer { Task { await onA.close(); await onB.close() } }
            try await stack.push("/goim/push/room?operation=1000&type=live&room=4000", "before")
            try await onA.receive("before")
            try await onB.receive("before")

            await b.process.kill9()
            try await onB.client.waitUntilClosed()

            // While B's registry record is still alive (job retries it) and after: A's users are served at once.
            try await stack.push("/goim/push/mids?operation=1000&mids=302", "to-dead-user")
            try await stack.push("/goim/push/mids?operation=1000&mids=301", "mid-while-b-dead")
            try await stack.push("/goim/push/room?operation=1000&type=live&room=4000", "room-while-b-dead")
            try await stack.push("/goim/push/all?operation=1000", "all-while-b-dead")
            try await onA.receiveAll(["mid-while-b-dead", "room-while-b-dead", "all-while-b-dead"])

            // B's record expires: logic lists only A, job drops B and settles what it held for B.
            try await stack.waitForInstances(["comet-a"])
            try await eventually("job removes comet-b") { Stack.cometEvents("comet removed", "comet-b", in: job.output) >= 1 }
            try await eventually("online/total counts only A's connection") {
                try await stack.get("/goim/online/total").body == #"{"code":0,"message":"","data":{"conn_count":1,"ip_count":1}}"#
            }
            // Its users' routes are still in Redis: a push to them is accepted and dropped by job (undeliverable).
            try await stack.push("/goim/push/mids?operation=1000&mids=302", "to-gone-user")
            try await eventually("job drops the push to the gone comet") {
                job.output.contains("push undeliverable; acknowledged") && job.output.contains("comet \"comet-b\" is not in the registry")
            }
            try await stack.push("/goim/push/mids?operation=1000&mids=301", "mid-after-b-gone")
            try await onA.receive("mid-after-b-gone")

            // B restarts on the same ports under the same name; its client reconnects.
            try await b.process.start()
            try await stack.waitForInstances(["comet-a", "comet-b"])
            try await eventually("job adds comet-b again") { Stack.cometEvents("comet added", "comet-b", in: job.output) >= 2 }
            let back = try await Member.connect("onB-again", to: b, webSocket: true, mid: 302, room: "live://4000")
            defer { Task { await back.close() } }
            try await stack.push("/goim/push/mids?operation=1000&mids=302", "mid-after-restart")
            try await stack.push("/goim/push/room?operation=1000&type=live&room=4000", "room-after-restart")
            try await back.receiveAll(["mid-after-restart", "room-after-restart"])
            try await onA.receive("room-after-restart")
            #expect(back.count(of: "to-gone-user") == 0)

            for process in [job, stack.logics[0].process, a.process] {
                #expect(process.pid != nil, "\(process.name) exited:\n\(process.output.suffix(4000))")
                #expect(!process.output.contains("Fatal error"), "\(process.name) crashed:\n\(process.output.suffix(4000))")
            }
        }
    }

    @Test("A job killed (SIGKILL) mid-stream and restarted delivers every push logic acknowledged")
    func jobKilled() async throws {
        try await Stack.run { stack in
            let comet = stack.comets[0]
            let job = stack.jobs[0]
            let tcp = try await Member.connect("tcp", to: comet, webSocket: false, mid: 401, room: "live://5000")
            let ws = try await Member.connect("ws", to: comet, webSocket: true, mid: 402, room: "live://5000")
            defer { Task { await tcp.close(); await ws.close() } }

            // Pushes go out one after another; each counts once logic answered code 0 (stored in JetStream).
            let acknowledged = Acknowledged()
            let pusher = Task {
                var index = 0
                while !Task.isCancelled {
                    let (route, body): (String, String) =
                        switch index % 3 {
                        case 0: ("/goim/push/mids?operation=1000&mids=401", "m401-\(index)")
                        case 1: ("/goim/push/mids?operation=1000&mids=402", "m402-\(index)")
                        default: ("/goim/push/room?operation=1000&type=live&room=5000", "r-\(index)")
                        }
                    index += 1
                    do {
                        let reply = try await stack.request(.post, route, body: body)
                        if reply.body == #"{"code":0,"message":""}"# { acknowledged.add(body) } else { acknowledged.failed(reply.body) }
                    } catch {
                        acknowledged.failed("\(error)")
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                }
            }
            defer { pusher.cancel() }

            try await eventually("30 pushes acknowledged (\(acknowledged.lastFailure))") { acknowledged.count >= 30 }
            await job.kill9()
            let atKill = acknowledged.count
            try await eventually("60 more pushes acknowledged while job is dead (\(acknowledged.lastFailure))") {
                acknowledged.count >= atKill + 60
            }
            try await job.start()
            let atRestart = acknowledged.count
            try await eventually("30 more pushes acknowledged after the restart (\(acknowledged.lastFailure))") {
                acknowledged.count >= atRestart + 30
            }
            pusher.cancel()
            _ = await pusher.result

            let all = acknowledged.bodies
            let forTCP = all.filter { $0.hasPrefix("m401-") || $0.hasPrefix("r-") }
            let forWS = all.filter { $0.hasPrefix("m402-") || $0.hasPrefix("r-") }
            try await tcp.receiveAll(forTCP)
            try await ws.receiveAll(forWS)
            #expect(job.pid != nil)
            #expect(!job.output.contains("Fatal error"))
        }
    }
}

/// Push bodies logic acknowledged, in order, and the last push that was not.
final class Acknowledged: Sendable {
    private let state = Mutex<(bodies: [String], lastFailure: String)>(([], "no push failed"))
    func add(_ body: String) { state.withLock { $0.bodies.append(body) } }
    func failed(_ reason: String) { state.withLock { $0.lastFailure = "last failed push: \(reason)" } }
    var count: Int { state.withLock { $0.bodies.count } }
    var bodies: [String] { state.withLock { $0.bodies } }
    var lastFailure: String { state.withLock { $0.lastFailure } }
}
