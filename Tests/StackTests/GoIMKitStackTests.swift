import GoIMKit
import GoIMProtocol
import StackHarness
import Synchronization
import TestSupport
import Testing

/// GoIMKit against the process stack: recovery through a comet killed -9 and restarted, in a room with history.
extension StackTests {
    @Test("GoIMKit resumes where it left off: its comet killed -9, the room messages and the pushes to its user sent meanwhile arrive once, in order", .startsServers)
    func goimKitRecovery() async throws {
        var options = Stack.Options()
        // Users keep history too: what was pushed to the session's user while it was away is recovered as well.
        let history = ["GOIM_HISTORY_ROOMS": "live:100:10m", "GOIM_HISTORY_MIDS": "100:10m"]
        options.logicEnvironment = history
        options.jobEnvironment = history
        try await Stack.run(options) { stack in
            let comet = stack.comets[0]
            var configuration = GoIMConfiguration(
                endpoints: [GoIMEndpoint(scheme: .ws, host: "127.0.0.1", port: comet.webSocketPort)],
                credentials: .authBody(AuthBody(mid: 901, roomID: "live://77", accepts: [1000])))
            configuration.heartbeat = .seconds(1)
            configuration.backoff = Backoff(base: .milliseconds(100), max: .milliseconds(500))
            let session = try GoIMSession(configuration)
            session.start()
            let seen = Seen()
            let collectors = Task {
                await withDiscardingTaskGroup { group in
                    group.addTask { for await message in session.messages where message.operation == 1000 {
                        let entry = message.stream == .user ? "user:\(message.text)@\(message.offset)" : message.text
                        seen.received.withLock { $0.append(entry) }
                    } }
                    group.addTask { for await state in session.states { seen.states.withLock { $0.append(state) } } }
                }
            }
            let push = { (body: String) in try await stack.push("/goim/push/room?operation=1000&type=live&room=77", body) }
            try await eventually("the session is connected with the room's epoch") { !session.position.epoch.isEmpty }
            try await push("before")
            try await eventually("the first message arrives") { seen.received.withLock { $0 } == ["before"] }
            try await stack.push("/goim/push/mids?operation=1000&mids=901", "mine 1")
            try await eventually("the push to the user arrives with its offset") {
                seen.received.withLock { $0 } == ["before", "user:mine 1@1"]
            }

            await comet.process.kill9()
            try await eventually("the session sees its comet gone") {
                seen.states.withLock { $0.contains { if case .disconnected = $0 { true } else { false } } }
            }
            let missed = (1...5).map { "missed \($0)" }
            for body in missed { try await push(body) }
            try await stack.push("/goim/push/mids?operation=1000&mids=901", "mine 2")
            try await comet.process.start()
            try await eventually("the five missed messages and the user's are recovered", timeout: .seconds(40)) {
                seen.received.withLock { $0.count } >= 8
            }
            try await push("live again")
            try await eventually("a live message follows") { seen.received.withLock { $0.last } == "live again" }
            // op 8, the room's missed messages, the user's, then live ones.
            #expect(seen.received.withLock { $0 } == ["before", "user:mine 1@1"] + missed + ["user:mine 2@2", "live again"])
            let reconnected = seen.states.withLock { $0 }.compactMap { state -> GoIMStanding? in
                if case .connected(_, let standing) = state { return standing } else { return nil }
            }
            #expect(reconnected.count >= 2)
            #expect(reconnected.last?.recovering == true && reconnected.last?.recovered == true, "\(reconnected)")
            #expect(reconnected.last?.user?.recovering == true && reconnected.last?.user?.recovered == true, "\(reconnected)")
            #expect(session.userPosition.offset == 2)
            await session.close()
            await collectors.value
        }
    }
}

/// What the session delivered, collected by its consumers.
private final class Seen: Sendable {
    let received = Mutex<[String]>([])
    let states = Mutex<[GoIMState]>([])
}
