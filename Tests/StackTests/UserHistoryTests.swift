import Foundation
import GoIMClient
import GoIMProtocol
import NIOCore
import StackHarness
import Testing

/// User history (offline messages) end to end (docs/history.md): with `history.mids`, job writes each push to a user
/// once to that user's history (its offset) and every comet delivers it to the user's connections in offset order; a
/// device that reconnects, to any comet, recovers what was pushed to its user while it was away.
@Suite("stack: user history (offline messages) and recovery", .serialized, .startsServers)
struct UserHistoryStackTests {
    static let history = ["GOIM_HISTORY_MIDS": "100:10m", "GOIM_HISTORY_ROOMS": "live:100:10m"]

    static func options(logics: Int = 1, jobs: Int = 1) -> Stack.Options {
        var options = Stack.Options()
        options.comets = 2
        options.logics = logics
        options.jobs = jobs
        options.logicEnvironment = history
        options.jobEnvironment = history
        return options
    }

    /// The `mid` member of a recovery-aware client's op 8 body.
    struct UserStanding: Equatable {
        var epoch: String
        var offset: UInt64
        var recovering: Bool
        var recovered: Bool

        init(epoch: String, offset: UInt64, recovering: Bool, recovered: Bool) {
            (self.epoch, self.offset, self.recovering, self.recovered) = (epoch, offset, recovering, recovered)
        }

        init(_ member: Member) throws {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(member.authReply.utf8)) as? [String: Any])
            let user = try #require(object["mid"] as? [String: Any], "op 8 without mid: \(member.authReply)")
            epoch = try #require(user["epoch"] as? String)
            offset = try #require((user["offset"] as? NSNumber)?.uint64Value)
            recovering = try #require(user["recovering"] as? Bool)
            recovered = try #require(user["recovered"] as? Bool)
        }
    }

    /// The user stream's messages a member got: (offset, body). Offsets of a user stream travel as `-offset`.
    static func stream(_ member: Member, prefix: String) -> [(offset: Int32, body: String)] {
        member.pushes.filter { $0.body.hasPrefix(prefix) }.map { (-$0.sequence, $0.body) }
    }

    @Test("a device away while its user gets pushes reconnects to another comet and recovers exactly those, then live ones; goim's clients see goim's bytes")
    func offlineMessagesRecovered() async throws {
        try await Stack.run(Self.options()) { stack in
            let (a, b) = (stack.comets[0], stack.comets[1])
            let goimTCP = try await Member.connect("goim-tcp", to: b, webSocket: false, mid: 7, room: "")
            let goimWS = try await Member.connect("goim-ws", to: a, webSocket: true, mid: 7, room: "live://side")
            var aware = try await Member.connect("phone", to: a, webSocket: true, mid: 7, room: "", recoverUser: ("", 0))
            defer { Task { await goimTCP.close(); await goimWS.close() } }
            #expect(goimTCP.authReply.isEmpty && goimWS.authReply.isEmpty)
            let first = try UserStanding(aware)
            #expect(first.epoch.count == 16 && first.offset == 0 && !first.recovering && !first.recovered)

            for index in 1...3 { try await stack.push("/goim/push/mids?operation=1000&mids=7", "u\(index)") }
            try await aware.receiveAll((1...3).map { "u\($0)" })
            #expect(Self.stream(aware, prefix: "u").map(\.offset) == [1, 2, 3])
            await aware.close()

            // While the phone is away: pushes to its user (some also to user 8, who never connects), and one the
            // phone's connections do not watch (operation 2000).
            for index in 4...8 { try await stack.push("/goim/push/mids?operation=1000&mids=7&mids=8", "u\(index)") }
            try await stack.push("/goim/push/mids?operation=2000&mids=7", "x-unwatched")
            for index in 9...10 { try await stack.push("/goim/push/mids?operation=1000&mids=7", "u\(index)") }

            aware = try await Member.connect("phone-again", to: b, webSocket: false, mid: 7, room: "", recoverUser: (first.epoch, 3))
            let again = try UserStanding(aware)
            #expect(again == UserStanding(epoch: first.epoch, offset: 11, recovering: true, recovered: true))
            for index in 11...15 { try await stack.push("/goim/push/mids?operation=1000&mids=7", "u\(index)") }
            try await aware.receiveAll((4...15).map { "u\($0)" })
            let got = Self.stream(aware, prefix: "u")
            #expect(got.map(\.body) == (4...15).map { "u\($0)" }, "recovered then live, in order, none twice")
            #expect(got.map(\.offset) == [4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16], "offset 9 is the unwatched push")
            #expect(aware.count(of: "x-unwatched") == 0)

            // goim's clients of the same user: every watched push once, in order, seq 0, as goim's comet writes a
            // push to keys (TCP: the inner packet; WebSocket: the op 9 envelope).
            for member in [goimTCP, goimWS] {
                try await member.receiveAll((1...15).map { "u\($0)" })
                let pushes = member.pushes.filter { $0.body.hasPrefix("u") }
                #expect(pushes.map(\.body) == (1...15).map { "u\($0)" }, "\(member.name)")
                #expect(pushes.allSatisfy { $0.sequence == 0 && $0.operation == 1000 }, "\(member.name)")
                #expect(pushes.allSatisfy { $0.inEnvelope == (member === goimWS) }, "\(member.name)")
            }

            // A client with both streams: room offsets positive, its user's negative.
            let both = try await Member.connect("both", to: a, webSocket: false, mid: 7, room: "live://side", recover: ("", 0), recoverUser: (first.epoch, 16))
            defer { Task { await both.close() } }
            try await stack.push("/goim/push/room?operation=1000&type=live&room=side", "room-1")
            try await stack.push("/goim/push/mids?operation=1000&mids=7", "user-17")
            try await both.receiveAll(["room-1", "user-17"])
            #expect(both.pushes.map(\.sequence) == [1, -17], "\(both.pushes)")

            // User 8 never connected: its offline messages wait in its history, readable over HTTP.
            let reply = try await stack.get("/goim/history/mid?mid=8&since=2")
            let data = try #require(reply.json?["data"] as? [String: Any], "\(reply.body)")
            #expect(data["complete"] as? Bool == true && (data["top"] as? Int) == 5 && (data["first"] as? Int) == 1)
            let messages = try #require(data["messages"] as? [[String: Any]])
            #expect(messages.compactMap { $0["offset"] as? Int } == [3, 4, 5])
            #expect(HistoryStackTests.bodies(messages) == ["u6", "u7", "u8"])
            let bad = try await stack.get("/goim/history/mid?mid=x")
            #expect(bad.code == -400 && bad.body.contains("mid"))
            let missing = try await stack.get("/goim/history/mid")
            #expect(missing.code == -400)
        }
    }

    @Test("a device that was away longer than the history holds is told, and gets what is there")
    func trimmedUserHistory() async throws {
        var options = Self.options()
        let small = ["GOIM_HISTORY_MIDS": "5:10m"]
        options.logicEnvironment = small
        options.jobEnvironment = small
        try await Stack.run(options) { stack in
            var aware = try await Member.connect("phone", to: stack.comets[0], webSocket: false, mid: 21, room: "", recoverUser: ("", 0))
            let epoch = try UserStanding(aware).epoch
            try await stack.push("/goim/push/mids?operation=1000&mids=21", "t1")
            try await aware.receiveAll(["t1"])
            await aware.close()
            for index in 2...9 { try await stack.push("/goim/push/mids?operation=1000&mids=21", "t\(index)") }
            aware = try await Member.connect("phone-again", to: stack.comets[1], webSocket: true, mid: 21, room: "", recoverUser: (epoch, 1))
            let last = aware
            defer { Task { await last.close() } }
            #expect(try UserStanding(aware) == UserStanding(epoch: epoch, offset: 9, recovering: true, recovered: false))
            try await aware.receiveAll((5...9).map { "t\($0)" })
            #expect(Self.stream(aware, prefix: "t").map(\.offset) == [5, 6, 7, 8, 9])
        }
    }

    @Test("two logics and two jobs pushing to one user: each of its devices sees offsets 1, 2, 3, … in order, none twice")
    func oneOrderPerUserWithSeveralLogicsAndJobs() async throws {
        try await Stack.run(Self.options(logics: 2, jobs: 2)) { stack in
            var devices: [Member] = []
            for (index, comet) in stack.comets.enumerated() {
                devices.append(try await Member.connect("aware-\(index)", to: comet, webSocket: index == 1, mid: 30, room: "", recoverUser: ("", 0)))
                devices.append(try await Member.connect("goim-\(index)", to: comet, webSocket: index == 0, mid: 30, room: ""))
            }
            let all = devices
            defer { Task { for device in all { await device.close() } } }
            let count = 200
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<6 {
                    group.addTask {
                        for index in stride(from: lane, to: count, by: 6) {
                            try await stack.push("/goim/push/mids?operation=1000&mids=30", "o\(index)", logic: index % 2)
                        }
                    }
                }
                try await group.waitForAll()
            }
            for device in devices { try await device.receiveAll((0..<count).map { "o\($0)" }) }
            let aware = devices.filter { $0.name.hasPrefix("aware") }
            let orders = aware.map { Self.stream($0, prefix: "o").map(\.body) }
            for (device, order) in zip(aware, orders) {
                #expect(order.count == count && order == orders[0], "\(device.name) saw another order or count")
                #expect(Self.stream(device, prefix: "o").map(\.offset) == Array(1...Int32(count)), "\(device.name)")
            }
            for device in devices where device.name.hasPrefix("goim") {
                #expect(Self.stream(device, prefix: "o").count == count, "\(device.name): each push once")
            }
            // The history holds that same order (its newest 100: history.mids is "100:10m").
            let reply = try await stack.get("/goim/history/mid?mid=30&limit=1000")
            let messages = try #require((reply.json?["data"] as? [String: Any])?["messages"] as? [[String: Any]])
            #expect(HistoryStackTests.bodies(messages) == Array(orders[0].suffix(100)))
        }
    }
}
