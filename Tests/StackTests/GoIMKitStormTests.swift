import Foundation
import GoIMKit
import GoIMProtocol
import StackHarness
import Synchronization
import TestSupport
import Testing

/// GoIMKit's reconnect storm at CI size (goim-bench reconnect-storm is the 5,000-session version, docs/benchmarks.md).
extension StackTests {
    @Test(
        "A reconnect storm: 320 GoIMKit sessions lose their comet to kill -9 while pushes flow; all come back on the other comet, spread by the backoff's jitter, each with every room offset once, in order",
        .startsServers)
    func goimKitReconnectStorm() async throws {
        var options = Stack.Options()
        options.comets = 2
        // Room history holds every push of the test (a few dozen), so nothing may be missing.
        let history = ["GOIM_HISTORY_ROOMS": "live:1000:10m"]
        options.logicEnvironment = history
        options.jobEnvironment = history
        try await Stack.run(options) { stack in
            let (doomed, survivor) = (stack.comets[0], stack.comets[1])
            let count = 320
            let logs = (0..<count).map { _ in StormLog() }
            let sessions = try (0..<count).map { index in
                // Every session starts on the first URL and moves to the next after a loss.
                var configuration = GoIMConfiguration(
                    endpoints: [
                        GoIMEndpoint(scheme: .tcp, host: doomed.host, port: doomed.tcpPort),
                        GoIMEndpoint(scheme: .tcp, host: survivor.host, port: survivor.tcpPort),
                    ],
                    credentials: .authBody(AuthBody(mid: 7000 + Int64(index), roomID: "live://88", accepts: [1000])))
                configuration.backoff = Backoff(base: .seconds(1), max: .seconds(4))
                configuration.recoverUser = false
                return try GoIMSession(configuration)
            }
            let consumers = Task {
                await withDiscardingTaskGroup { group in
                    for (session, log) in zip(sessions, logs) {
                        group.addTask { for await message in session.messages where message.stream == .room { log.deliver(message) } }
                        group.addTask { for await state in session.states { log.record(state) } }
                    }
                }
            }
            for session in sessions { session.start() }
            try await eventually("every session is in the room on the first comet", timeout: .seconds(60)) {
                logs.allSatisfy { $0.connectedPorts == [doomed.tcpPort] }
            }

            // Numbered pushes, ten a second, from before the kill until every session is back and a few more.
            let pusher = Pusher()
            let pushing = Task {
                while !pusher.stopped {
                    let number = pusher.pushed + 1
                    try await stack.push("/goim/push/room?operation=1000&type=live&room=88", "\(number)")
                    pusher.did(number)
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            try await eventually("ten pushes before the kill") { pusher.pushed >= 10 }
            let killed = ContinuousClock.now
            await doomed.process.kill9()
            try await eventually("every session is back, on the other comet", timeout: .seconds(40)) {
                logs.allSatisfy { $0.connectedPorts.last == survivor.tcpPort }
            }
            let lastBeforeAllBack = pusher.pushed
            try await eventually("five pushes after every session is back") { pusher.pushed >= lastBeforeAllBack + 5 }
            pusher.stop()
            try await pushing.value
            let pushed = pusher.pushed

            let reply = try await stack.get("/goim/history/room?type=live&room=88&limit=0")
            #expect(reply.body.contains("\"top\":\(pushed),"), "history holds one offset per push: \(reply.body)")
            try await eventually("every session delivered offset \(pushed)", timeout: .seconds(30)) {
                logs.allSatisfy { $0.offsets.last == UInt64(pushed) }
            }
            for (index, log) in logs.enumerated() {
                // Nothing missing that history holds, nothing twice, in order: offset n carries push n.
                let offsets = log.offsets
                #expect(offsets == (1...UInt64(pushed)).map { $0 }, "session \(index): \(offsets)")
                #expect(log.bodies == (1...pushed).map { "\($0)" }, "session \(index)")
                let reconnects = log.standings.dropFirst()
                #expect(!reconnects.isEmpty, "session \(index) did not reconnect")
                #expect(reconnects.allSatisfy { $0.recovering && $0.recovered }, "session \(index): \(reconnects)")
            }
            // Spread by the jitter (attempt 0 waits uniformly in [0, 1 s)): no 100 ms holds half the sessions' first
            // attempts after the kill, nor half their reconnects. (Without jitter the attempts fall in one bucket; the
            // reconnects spread anyway, by the comet's accept queue and SYN retransmits, so they alone prove little.)
            let spread = { (delays: [Duration]) -> (busiest: Int, buckets: [(key: Int, value: Int)]) in
                var buckets: [Int: Int] = [:]
                for delay in delays { buckets[Int(delay / .milliseconds(100)), default: 0] += 1 }
                return (buckets.values.max() ?? 0, buckets.sorted { $0.key < $1.key })
            }
            let attempts = logs.compactMap { $0.firstAttempt(after: killed, port: survivor.tcpPort) }
            let reconnects = logs.compactMap { $0.firstConnect(after: killed) }
            #expect(attempts.count == count && reconnects.count == count)
            let (attemptPeak, attemptBuckets) = spread(attempts)
            let (reconnectPeak, reconnectBuckets) = spread(reconnects)
            #expect(attemptPeak < count / 2, "first attempts per 100 ms since the kill: \(attemptBuckets)")
            #expect(reconnectPeak < count / 2, "reconnects per 100 ms since the kill: \(reconnectBuckets)")

            for session in sessions { await session.close() }
            await consumers.value
        }
    }
}

/// One session's deliveries and states, written by its consumers.
private final class StormLog: Sendable {
    private struct State {
        var offsets: [UInt64] = []
        var bodies: [String] = []
        var connects: [(port: Int, at: ContinuousClock.Instant, standing: GoIMStanding?)] = []
        var attempts: [(port: Int, at: ContinuousClock.Instant)] = []
    }

    private let state = Mutex(State())

    func deliver(_ message: GoIMMessage) {
        state.withLock { $0.offsets.append(message.offset); $0.bodies.append(message.text) }
    }

    func record(_ event: GoIMState) {
        let now = ContinuousClock.now
        switch event {
        case .connecting(let endpoint): state.withLock { $0.attempts.append((endpoint.port, now)) }
        case .connected(let endpoint, let standing): state.withLock { $0.connects.append((endpoint.port, now, standing)) }
        default: break
        }
    }

    var offsets: [UInt64] { state.withLock { $0.offsets } }
    var bodies: [String] { state.withLock { $0.bodies } }
    var connectedPorts: [Int] { state.withLock { $0.connects.map(\.port) } }
    var standings: [GoIMStanding] { state.withLock { $0.connects.compactMap(\.standing) } }

    /// When the session first tried `port` after `instant`: the end of its backoff.
    func firstAttempt(after instant: ContinuousClock.Instant, port: Int) -> Duration? {
        state.withLock { $0.attempts.first { $0.at > instant && $0.port == port }.map { $0.at - instant } }
    }

    func firstConnect(after instant: ContinuousClock.Instant) -> Duration? {
        state.withLock { $0.connects.first { $0.at > instant }.map { $0.at - instant } }
    }
}

/// The pusher's count and its stop flag, shared with the test's body.
private final class Pusher: Sendable {
    private let state = Mutex((pushed: 0, stopped: false))
    var pushed: Int { state.withLock { $0.pushed } }
    var stopped: Bool { state.withLock { $0.stopped } }
    func did(_ number: Int) { state.withLock { $0.pushed = number } }
    func stop() { state.withLock { $0.stopped = true } }
}
