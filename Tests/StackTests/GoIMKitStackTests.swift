import GoIMKit
import GoIMProtocol
import StackHarness
import Synchronization
import TestSupport
import Testing

/// GoIMKit against the process stack: recovery through a comet killed -9 and restarted, in a room with history.
extension StackTests {
    @Test("GoIMKit resumes where it left off: its comet killed -9, the messages pushed meanwhile arrive once, in order", .startsServers)
    func goimKitRecovery() async throws {
        var options = Stack.Options()
        options.logicEnvironment = ["GOIM_HISTORY_ROOMS": "live:100:10m"]
        options.jobEnvironment = ["GOIM_HISTORY_ROOMS": "live:100:10m"]
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
                    group.addTask { for await message in session.messages where message.operation == 1000 { seen.received.withLock { $0.append(message.text) } } }
                    group.addTask { for await state in session.states { seen.states.withLock { $0.append(state) } } }
                }
            }
            let push = { (body: String) in try await stack.push("/goim/push/room?operation=1000&type=live&room=77", body) }
            try await eventually("the session is connected with the room's epoch") { !session.position.epoch.isEmpty }
            try await push("before")
            try await eventually("the first message arrives") { seen.received.withLock { $0 } == ["before"] }

            await comet.process.kill9()
            try await eventually("the session sees its comet gone") {
                seen.states.withLock { $0.contains { if case .disconnected = $0 { true } else { false } } }
            }
            let missed = (1...5).map { "missed \($0)" }
            for body in missed { try await push(body) }
            try await comet.process.start()
            try await eventually("the five missed messages are recovered", timeout: .seconds(40)) {
                seen.received.withLock { $0.count } >= 6
            }
            try await push("live again")
            try await eventually("a live message follows") { seen.received.withLock { $0.last } == "live again" }
            #expect(seen.received.withLock { $0 } == ["before"] + missed + ["live again"])
            let reconnected = seen.states.withLock { $0 }.compactMap { state -> GoIMStanding? in
                if case .connected(_, let standing) = state { return standing } else { return nil }
            }
            #expect(reconnected.count >= 2)
            #expect(reconnected.last?.recovering == true && reconnected.last?.recovered == true, "\(reconnected)")
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
