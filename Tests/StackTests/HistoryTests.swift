import Foundation
import GoIMClient
import GoIMProtocol
import NIOCore
import StackHarness
import Synchronization
import Testing

/// Room history and recovery end to end (docs/history.md): job writes each message of a `live://` room to history
/// (its offset), comets order them, and a recovery-aware client that reconnects gets exactly what it missed.
@Suite("stack: room history and recovery", .serialized, .startsServers)
struct HistoryStackTests {
    static let history = ["GOIM_HISTORY_ROOMS": "live:1000:10m,small:10:10m"]

    static func options(comets: Int = 2, logics: Int = 1, jobs: Int = 1) -> Stack.Options {
        var options = Stack.Options()
        options.comets = comets
        options.logics = logics
        options.jobs = jobs
        options.logicEnvironment = history
        options.jobEnvironment = history
        return options
    }

    /// The op 8 body of a recovery-aware client.
    struct Standing: Equatable {
        var room: String
        var epoch: String
        var offset: UInt64
        var recovering: Bool
        var recovered: Bool

        init(room: String, epoch: String, offset: UInt64, recovering: Bool, recovered: Bool) {
            (self.room, self.epoch, self.offset, self.recovering, self.recovered) = (room, epoch, offset, recovering, recovered)
        }

        init(_ member: Member) throws {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(member.authReply.utf8)) as? [String: Any])
            room = try #require(object["room"] as? String)
            epoch = try #require(object["epoch"] as? String)
            offset = try #require((object["offset"] as? NSNumber)?.uint64Value)
            recovering = try #require(object["recovering"] as? Bool)
            recovered = try #require(object["recovered"] as? Bool)
        }
    }

    /// The room messages a member got, in arrival order: (offset, body).
    static func stream(_ member: Member, prefix: String) -> [(offset: Int32, body: String)] {
        member.pushes.filter { $0.body.hasPrefix(prefix) }.map { ($0.sequence, $0.body) }
    }

    /// The bodies of `GET /goim/history/room`'s messages (base64 on the wire), in order.
    static func bodies(_ messages: [[String: Any]]) -> [String] {
        messages.compactMap { ($0["body"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// Offsets `from...to` each exactly once, in order.
    static func expectConsecutive(_ offsets: [Int32], from: Int32, to: Int32, _ who: String) {
        #expect(offsets == Array(from...to), "\(who): offsets \(offsets.prefix(20))… (\(offsets.count)), expected \(from)...\(to)")
    }

    @Test("a client away while 100 pushes go to its room reconnects to another comet and gets exactly those 100, then live ones")
    func recoverAfterReconnect() async throws {
        try await Stack.run(Self.options()) { stack in
            let (a, b) = (stack.comets[0], stack.comets[1])
            let goim = try await Member.connect("goim", to: b, webSocket: false, mid: 2, room: "live://r1")
            var aware = try await Member.connect("aware", to: a, webSocket: true, mid: 1, room: "live://r1", recover: ("", 0))
            defer { Task { await goim.close() } }
            // goim's client: op 8 with an empty body, as goim.
            #expect(goim.authReply.isEmpty)
            let first = try Standing(aware)
            #expect(first.room == "live://r1" && first.epoch.count == 16 && first.offset == 0)
            #expect(!first.recovering && !first.recovered)

            for index in 1...5 { try await stack.push("/goim/push/room?operation=1000&type=live&room=r1", "m\(index)") }
            try await aware.receiveAll((1...5).map { "m\($0)" })
            Self.expectConsecutive(Self.stream(aware, prefix: "m").map(\.offset), from: 1, to: 5, "aware before")
            await aware.close()

            for index in 6...105 { try await stack.push("/goim/push/room?operation=1000&type=live&room=r1", "m\(index)") }
            try await goim.receiveAll((1...105).map { "m\($0)" })
            // goim's client saw every message once, in order, with seq 0 (goim's bytes).
            #expect(Self.stream(goim, prefix: "m").map(\.body) == (1...105).map { "m\($0)" })
            #expect(Self.stream(goim, prefix: "m").allSatisfy { $0.offset == 0 })

            aware = try await Member.connect("aware-again", to: b, webSocket: false, mid: 1, room: "live://r1", recover: (first.epoch, 5))
            let again = try Standing(aware)
            #expect(again == Standing(room: "live://r1", epoch: first.epoch, offset: 105, recovering: true, recovered: true))
            for index in 106...115 { try await stack.push("/goim/push/room?operation=1000&type=live&room=r1", "m\(index)") }
            try await aware.receiveAll((6...115).map { "m\($0)" })
            let got = Self.stream(aware, prefix: "m")
            Self.expectConsecutive(got.map(\.offset), from: 6, to: 115, "aware after reconnect")
            #expect(got.map(\.body) == (6...115).map { "m\($0)" })

            // The same history over HTTP (bodies in base64).
            let reply = try await stack.get("/goim/history/room?type=live&room=r1&since=113&epoch=\(first.epoch)")
            let data = try #require(reply.json?["data"] as? [String: Any])
            #expect(data["complete"] as? Bool == true && (data["top"] as? Int) == 115)
            let messages = try #require(data["messages"] as? [[String: Any]])
            #expect(messages.compactMap { $0["offset"] as? Int } == [114, 115])
            #expect(Self.bodies(messages) == ["m114", "m115"])
            let none = try await stack.get("/goim/history/room?type=nohistory&room=r1")
            #expect(none.code == -400 && none.body.contains("keep no history"))
            let bad = try await stack.get("/goim/history/room?type=live&room=r1&since=-1")
            #expect(bad.code == -400 && bad.body.contains("since"))
        }
    }

    @Test("pushes at 200/s during a recovery: no gap, no duplicate, order kept")
    func recoverWhilePushing() async throws {
        try await Stack.run(Self.options()) { stack in
            let (a, b) = (stack.comets[0], stack.comets[1])
            var aware = try await Member.connect("aware", to: a, webSocket: false, mid: 1, room: "live://busy", recover: ("", 0))
            let epoch = try Standing(aware).epoch
            let stop = StopFlag()
            let started = ContinuousClock.now
            // Two lanes, each a push every 10 ms: about 200 pushes a second while the client is away and recovers.
            var lanes: [Task<Int, any Error>] = []
            for lane in 0..<2 {
                lanes.append(Task {
                    var sent = 0
                    let clock = ContinuousClock()
                    var next = clock.now
                    while !stop.value.load(ordering: .relaxed) {
                        try await stack.push("/goim/push/room?operation=1000&type=live&room=busy", "p\(lane)-\(sent)")
                        sent += 1
                        next += .milliseconds(10)
                        if next > clock.now { try await clock.sleep(until: next) }
                    }
                    return sent
                })
            }
            try await eventually("some pushes arrive") { Self.stream(aware, prefix: "p").count >= 50 }
            await aware.close()
            let before = Self.stream(aware, prefix: "p")
            try await Task.sleep(for: .milliseconds(500))
            let last = UInt64(before.last?.offset ?? 0)
            aware = try await Member.connect("aware-again", to: b, webSocket: true, mid: 1, room: "live://busy", recover: (epoch, last))
            #expect(try Standing(aware).recovered)
            try await Task.sleep(for: .seconds(2))
            stop.value.store(true, ordering: .relaxed)
            var total = 0
            var bodies: [String] = []
            for (lane, task) in lanes.enumerated() {
                let sent = try await task.value
                total += sent
                bodies += (0..<sent).map { "p\(lane)-\($0)" }
            }
            let rate = Double(total) / (ContinuousClock.now - started).seconds
            print("recoverWhilePushing: \(total) pushes at \(Int(rate))/s; \(before.count) before the disconnect")
            let seenBefore = Set(before.map(\.body))
            try await aware.receiveAll(bodies.filter { !seenBefore.contains($0) })
            let after = Self.stream(aware, prefix: "p")
            let all = before + after
            Self.expectConsecutive(all.map(\.offset), from: 1, to: Int32(total), "across the reconnect")
            #expect(Set(all.map(\.body)).count == total)
            // The order the client saw is the history's order.
            let reply = try await stack.get("/goim/history/room?type=live&room=busy&limit=1000")
            let messages = try #require((reply.json?["data"] as? [String: Any])?["messages"] as? [[String: Any]])
            let stored = Self.bodies(messages)
            #expect(stored == all.map(\.body))
        }
    }

    @Test("trimmed history and a lost store: the client is told and gets what is there")
    func incompleteRecovery() async throws {
        try await Stack.run(Self.options(comets: 1)) { stack in
            let comet = stack.comets[0]
            let witness = try await Member.connect("witness", to: comet, webSocket: false, mid: 9, room: "small://t")
            defer { Task { await witness.close() } }
            var aware = try await Member.connect("aware", to: comet, webSocket: false, mid: 1, room: "small://t", recover: ("", 0))
            let epoch = try Standing(aware).epoch
            for index in 1...2 { try await stack.push("/goim/push/room?operation=1000&type=small&room=t", "s\(index)") }
            try await aware.receiveAll(["s1", "s2"])
            await aware.close()
            // 30 more: only the newest 10 (23...32) stay in a `small` room's history.
            for index in 3...32 { try await stack.push("/goim/push/room?operation=1000&type=small&room=t", "s\(index)") }
            try await witness.receive("s32")
            aware = try await Member.connect("aware-2", to: comet, webSocket: false, mid: 1, room: "small://t", recover: (epoch, 2))
            let trimmed = try Standing(aware)
            #expect(trimmed.epoch == epoch && trimmed.offset == 32 && trimmed.recovering && !trimmed.recovered)
            try await aware.receive("s32")
            Self.expectConsecutive(Self.stream(aware, prefix: "s").map(\.offset), from: 23, to: 32, "after trimming")
            await aware.close()

            // The store loses everything (a Redis restart without persistence): a new epoch.
            let flushed = try await stack.redisCommand(["FLUSHALL"])
            #expect(flushed == "OK")
            try await stack.push("/goim/push/room?operation=1000&type=small&room=t", "n1")
            try await witness.receive("n1")
            aware = try await Member.connect("aware-3", to: comet, webSocket: false, mid: 1, room: "small://t", recover: (epoch, 32))
            let lost = try Standing(aware)
            #expect(lost.epoch != epoch && lost.epoch.count == 16 && !lost.recovered && lost.offset == 1)
            let n1 = try await aware.receive("n1")
            #expect(n1.sequence == 1)
            await aware.close()
        }
    }

    @Test("Redis down: room messages still go out live (without offsets), and the history that comes back is a new epoch")
    func historyStoreDown() async throws {
        try await Stack.run(Self.options(comets: 1)) { stack in
            let comet = stack.comets[0]
            let witness = try await Member.connect("witness", to: comet, webSocket: false, mid: 9, room: "live://down")
            let aware = try await Member.connect("aware", to: comet, webSocket: false, mid: 1, room: "live://down", recover: ("", 0))
            let epoch = try Standing(aware).epoch
            try await stack.push("/goim/push/room?operation=1000&type=live&room=down", "before")
            #expect(try await aware.receive("before").sequence == 1)

            await stack.redis.stop()
            for index in 1...3 { try await stack.push("/goim/push/room?operation=1000&type=live&room=down", "during\(index)") }
            try await witness.receiveAll(["during1", "during2", "during3"])
            try await aware.receiveAll(["during1", "during2", "during3"])
            // Not in history: no offset (a client cannot take them for recoverable).
            #expect(Self.stream(aware, prefix: "during").allSatisfy { $0.offset == 0 })

            try await stack.redis.start()
            try await eventually("a room message has an offset again", timeout: .seconds(30)) {
                try await stack.push("/goim/push/room?operation=1000&type=live&room=down", "after")
                return aware.pushes.contains { $0.body == "after" && $0.sequence > 0 }
            }
            // The history restarted: a client with the old epoch is told it cannot recover everything.
            let again = try await Member.connect("aware-2", to: comet, webSocket: false, mid: 1, room: "live://down", recover: (epoch, 1))
            let standing = try Standing(again)
            #expect(standing.epoch != epoch && standing.recovering && !standing.recovered)
            await again.close()
            await aware.close()
            await witness.close()
        }
    }

    @Test("a room change (op 12) with an offset recovers what the client missed in the room it returns to")
    func roomChangeRecovers() async throws {
        try await Stack.run(Self.options(comets: 1)) { stack in
            let comet = stack.comets[0]
            let aware = try await Member.connect("aware", to: comet, webSocket: true, mid: 1, room: "live://a", recover: ("", 0))
            let epochA = try Standing(aware).epoch
            try await stack.push("/goim/push/room?operation=1000&type=live&room=a", "a1")
            #expect(try await aware.receive("a1").sequence == 1)

            func change(_ body: String) async throws -> [String: Any] {
                let reply = try await aware.client.request(
                    Packet(operation: .changeRoom, sequence: 7, body: ByteBuffer(string: body)), replyOperation: .changeRoomReply)
                #expect(reply.sequence == 7)
                return try #require(try JSONSerialization.jsonObject(with: Data(reply.body.readableBytesView)) as? [String: Any])
            }
            // To live://b for the first time: offsets, nothing to recover.
            let inB = try await change(#"{"room":"live://b","recover":{}}"#)
            #expect(inB["room"] as? String == "live://b" && (inB["epoch"] as? String)?.count == 16 && inB["recovering"] as? Bool == false)
            try await stack.push("/goim/push/room?operation=1000&type=live&room=a", "a2")
            try await stack.push("/goim/push/room?operation=1000&type=live&room=a", "a3")
            try await stack.push("/goim/push/room?operation=1000&type=live&room=b", "b1")
            #expect(try await aware.receive("b1").sequence == 1)
            #expect(aware.count(of: "a2") == 0)
            // Back to live://a from offset 1: a2 and a3 first, then live.
            let backInA = try await change(#"{"room":"live://a","recover":{"epoch":"\#(epochA)","offset":1}}"#)
            #expect(backInA["recovered"] as? Bool == true && (backInA["offset"] as? NSNumber)?.intValue == 3)
            try await stack.push("/goim/push/room?operation=1000&type=live&room=a", "a4")
            try await aware.receive("a4")
            #expect(Self.stream(aware, prefix: "a").map(\.body) == ["a1", "a2", "a3", "a4"])
            #expect(Self.stream(aware, prefix: "a").map(\.offset) == [1, 2, 3, 4])
            // goim's form still echoes the body.
            let plain = try await aware.client.request(
                Packet(operation: .changeRoom, sequence: 8, body: ByteBuffer(string: "live://c")), replyOperation: .changeRoomReply)
            #expect(String(buffer: plain.body) == "live://c")
            await aware.close()
        }
    }

    @Test("two logics and two jobs publishing to one room: every client sees the same order, offsets increase")
    func oneOrderWithSeveralLogicsAndJobs() async throws {
        try await Stack.run(Self.options(comets: 2, logics: 2, jobs: 2)) { stack in
            var members: [Member] = []
            for (index, comet) in stack.comets.enumerated() {
                members.append(try await Member.connect("aware-\(index)", to: comet, webSocket: index == 1, mid: Int64(index + 1), room: "live://order", recover: ("", 0)))
                members.append(try await Member.connect("goim-\(index)", to: comet, webSocket: index == 0, mid: Int64(index + 10), room: "live://order"))
            }
            let all = members
            defer { Task { for member in all { await member.close() } } }
            let count = 300
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<6 {
                    group.addTask {
                        for index in stride(from: lane, to: count, by: 6) {
                            try await stack.push("/goim/push/room?operation=1000&type=live&room=order", "o\(index)", logic: index % 2)
                        }
                    }
                }
                try await group.waitForAll()
            }
            for member in members { try await member.receiveAll((0..<count).map { "o\($0)" }) }
            let orders = members.map { Self.stream($0, prefix: "o").map(\.body) }
            for (member, order) in zip(members, orders) {
                #expect(order.count == count, "\(member.name) got \(order.count) messages")
                #expect(order == orders[0], "\(member.name) saw another order")
            }
            for member in members where member.name.hasPrefix("aware") {
                Self.expectConsecutive(Self.stream(member, prefix: "o").map(\.offset), from: 1, to: Int32(count), member.name)
            }
            // The history holds the same order.
            let reply = try await stack.get("/goim/history/room?type=live&room=order&limit=1000")
            let messages = try #require((reply.json?["data"] as? [String: Any])?["messages"] as? [[String: Any]])
            let bodies = Self.bodies(messages)
            #expect(bodies == orders[0])
            // What the comets had to put back in order (printed: how often two jobs crossed depends on timing).
            for comet in stack.comets {
                await comet.process.stop()
                let summary = comet.process.output.split(separator: "\n").last { $0.contains("closed all client connections") }
                print("\(comet.name): \(summary.map(String.init) ?? "no summary")")
                #expect(summary?.contains("goim.offsetsSkipped=0") == true)
            }
        }
    }
}

extension Duration {
    fileprivate var seconds: Double {
        let (whole, fraction) = components
        return Double(whole) + Double(fraction) / 1e18
    }
}

final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}
