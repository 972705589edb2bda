import ArgumentParser
import Foundation
import GoIMKit
import GoIMProtocol
import NIOConcurrencyHelpers
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - reconnect storm

/// GoIMKit sessions (the SDK itself, not bench clients) in one live room with history lose their comet to kill -9,
/// all at once, while numbered pushes flow through logic. They fail over to the next comet URL after the SDK's
/// backoff; the report is how fast they came back (a curve per 250 ms since the kill, 50/90/99/100 %) and what they
/// lost of what history held.
struct ReconnectStorm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconnect-storm",
        abstract: "GoIMKit sessions lose their comet (kill -9) at once: reconnect curve, and lost/duplicate/out-of-order messages.")

    @Option(help: "GoIMKit sessions in all.") var sessions = 5000
    @Option(help: "Sessions per client process (one descriptor each; a process may hold at most 20,000).") var perProcess = 2000
    @Option(help: "Comet URLs, comma-separated. Every session starts on the first (the comet killed) and moves to the next after a loss.")
    var urls = "tcp://127.0.0.1:3101,tcp://127.0.0.1:3201"
    @Option(help: "pid of the comet behind the first URL: it gets SIGKILL (required).") var killPid: Int32?
    @Option(help: "Logic HTTP address: pushes, and the room's history position (GOIM_PUSH_TOKEN when logic needs one).")
    var logic = "127.0.0.1:3111"
    @Option(help: "Room every session joins; its type must keep history (GOIM_HISTORY_ROOMS), holding every push of the run.")
    var room = "live://9000"
    @Option(help: "Numbered room pushes per second through logic's HTTP API.") var rate: Double = 10
    @Option(help: "Seconds of pushes before the kill.") var before: Double = 3
    @Option(help: "Seconds of pushes after the kill.") var after: Double = 20
    @Option(help: "Backoff base in seconds (GoIMKit's default).") var backoffBase: Double = Backoff().base.secondsValue
    @Option(help: "Backoff ceiling in seconds (GoIMKit's default).") var backoffMax: Double = Backoff().max.secondsValue
    @Option(help: "Heartbeat interval in seconds (GoIMKit's default).") var heartbeat: Double = 30
    @Option(help: "Sessions started per second before the kill, all processes together.") var connectRate: Double = 1000
    @Option(help: "Seconds to wait after the last push for every session to be back and caught up.") var settle: Double = 60
    @Flag(help: "JSON output.") var json = false
    @Flag(help: .hidden) var child = false
    @Option(help: .hidden) var spec: String?

    func run() async throws {
        _ = raiseFileLimit()
        if child { return try await StormChild.run(spec: spec) }
        let urlList = urls.split(separator: ",").map(String.init)
        guard urlList.count >= 2 else { throw ValidationError("--urls needs the comet to kill and one to fail over to") }
        for url in urlList { _ = try GoIMEndpoint(url) }
        guard perProcess >= 1, perProcess <= 19_500 else { throw ValidationError("--per-process is 1...19,500 (20,000 descriptors)") }
        guard let killPid, kill(killPid, 0) == 0 else { throw ValidationError("--kill-pid must name a running comet of ours") }
        guard backoffBase > 0, backoffMax >= backoffBase else { throw ValidationError("--backoff-base > 0 and <= --backoff-max") }
        let (type, id) = splitRoom(room)
        let parts = logic.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--logic is host:port") }

        let processes = (sessions + perProcess - 1) / perProcess
        var specs: [StormSpec] = []
        for index in 0..<processes {
            let count = sessions / processes + (index < sessions % processes ? 1 : 0)
            specs.append(StormSpec(
                urls: urlList, count: count, firstMid: 1_000_000 + Int64(index * perProcess), room: room,
                backoffBase: backoffBase, backoffMax: backoffMax, heartbeat: heartbeat, rate: connectRate / Double(processes)))
        }
        let children = try StormChildren(specs: specs)
        let ready = await children.wait(timeout: .seconds(300), progress: { total in
            progressLine("connecting: \(total.ready)/\(sessions) sessions in \(room) with its epoch")
        }) { $0.ready >= sessions }
        endProgress()
        guard ready.ready >= sessions else {
            _ = await children.stop()
            throw BenchError.message("only \(ready.ready) of \(sessions) sessions connected in 300 s")
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let poster = try await HTTPPoster.connect(host: String(parts[0]), port: port, group: group)
        // Offsets from an earlier run of the same room are not this run's to deliver.
        let startPosition = try await historyPosition(poster, type: type, id: id)
        let pushPath = "/goim/push/room?operation=1000&type=\(type)&room=\(id)"
        let total = Int(rate * (before + after))
        let rate = self.rate
        let start = ContinuousClock.now
        let pusher = Task {
            var accepted = 0
            for number in 1...max(1, total) {
                let due = start + .seconds(Double(number - 1) / rate)
                if due > .now { try await Task.sleep(until: due) }
                let (status, text) = try await poster.post(pushPath, body: Array("\(number)".utf8))
                if status == 200 && text.contains("\"code\":0") { accepted += 1 }
            }
            return accepted
        }
        try await Task.sleep(until: start + .seconds(before))
        guard kill(killPid, SIGKILL) == 0 else { throw BenchError.message("kill -9 \(killPid) failed: errno \(errno)") }
        let killed = wallNanoseconds()
        while !Task.isCancelled {
            let now = children.total()
            progressLine("\(String(format: "%.1f", Double(wallNanoseconds() - killed) / 1e9)) s after the kill: \(now.connected)/\(sessions) connected")
            if ContinuousClock.now >= start + .seconds(before + after) { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        let accepted = try await pusher.value
        // What history holds of the room now: every offset in first...top must reach every session.
        let position = try await historyPosition(poster, type: type, id: id)
        _ = await children.wait(timeout: .seconds(settle), progress: { total in
            progressLine("settling: \(total.connected)/\(sessions) connected, \(total.caughtUp(to: position.top))/\(sessions) at offset \(position.top)")
        }) { $0.connected >= sessions && $0.caughtUp(to: position.top) >= sessions }
        endProgress()
        await poster.close()
        try await group.shutdownGracefully()
        let results = await children.stop()

        var report = Report(scenario: "GoIMKit reconnect storm")
        report.parameters = [
            "sessions": "\(sessions)", "processes": "\(processes)", "urls": urls, "room": room,
            "pushes": "\(rate)/s, \(before) s before and \(after) s after the kill",
            "backoff": "base \(backoffBase) s, max \(backoffMax) s", "heartbeat": "\(heartbeat) s",
        ]
        let first = max(1, position.first, startPosition.epoch == position.epoch ? startPosition.top + 1 : 0)
        report.parameters["history"] = "epoch \(position.epoch), offsets \(first)...\(position.top) this run"
        let analysis = StormAnalysis(results: results, sessions: sessions, killed: killed, first: first, top: position.top)
        report.add("pushes sent", Double(max(1, total)))
        report.add("pushes accepted", Double(accepted))
        report.add("offsets in history", Double(position.top >= first ? position.top - first + 1 : 0))
        analysis.add(to: &report, curve: json)
        report.print(json: json)
        if !json { analysis.printCurve() }
    }

    private func historyPosition(_ poster: HTTPPoster, type: String, id: String) async throws -> (epoch: String, first: UInt64, top: UInt64) {
        let (status, text) = try await poster.get("/goim/history/room?type=\(type)&room=\(id)&limit=0")
        guard status == 200, let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let data = object["data"] as? [String: Any], let top = (data["top"] as? NSNumber)?.uint64Value
        else { throw BenchError.message("GET /goim/history/room: HTTP \(status) \(text) (does the room's type keep history?)") }
        return (data["epoch"] as? String ?? "", (data["first"] as? NSNumber)?.uint64Value ?? 1, top)
    }
}

/// What one child process runs.
struct StormSpec: Codable, Sendable {
    var urls: [String]
    var count: Int
    var firstMid: Int64
    var room: String
    var backoffBase: Double
    var backoffMax: Double
    var heartbeat: Double
    /// Sessions started per second.
    var rate: Double
}

/// One child's report: a progress line every 250 ms, then a final one with every session's result.
struct StormLine: Codable, Sendable {
    /// Sessions connected with the room's epoch (op 8 answered by a comet with history).
    var ready = 0
    /// Sessions connected now.
    var connected = 0
    /// How many sessions have delivered at least offset `n`, for the offsets asked about: sessions' last offsets,
    /// counted per value so that the parent can ask "how many are at `top`" for any top.
    var lastOffsets: [UInt64: Int] = [:]
    var results: [StormSessionResult]?

    mutating func add(_ other: StormLine) {
        ready += other.ready
        connected += other.connected
        lastOffsets.merge(other.lastOffsets, uniquingKeysWith: +)
    }

    func caughtUp(to top: UInt64) -> Int { lastOffsets.reduce(0) { $1.key >= top ? $0 + $1.value : $0 } }
}

/// What one session saw, as the app saw it (GoIMKit's `messages` and `states`).
struct StormSessionResult: Codable, Sendable {
    /// Wall-clock ns of each `.connected`, and of each `.connecting` (an attempt, after the backoff).
    var connects: [UInt64] = []
    var attempts: [UInt64] = []
    /// `.connected` after a loss whose standing said recovering but not recovered: history did not hold all it missed.
    var incomplete = 0
    /// Distinct room offsets delivered, as closed ranges `[low, high]`.
    var ranges: [[UInt64]] = []
    /// Deliveries of an offset, or of a push number, already delivered.
    var duplicates = 0
    /// Deliveries of an offset lower than one delivered before it.
    var outOfOrder = 0
    /// Epochs seen after the first (the room's history started again: its offsets restarted).
    var epochChanges = 0
}

// MARK: - child side

/// A child process: `count` GoIMKit sessions, their messages and states recorded per session.
enum StormChild {
    static func run(spec json: String?) async throws {
        guard let json, let spec = try? JSONDecoder().decode(StormSpec.self, from: Data(json.utf8)) else {
            throw ValidationError("--child needs --spec JSON")
        }
        let stdinClosed = StdinWatcher()
        // One event-loop thread per process, as the other bench clients: the processes share the cores with the stack.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let endpoints = try spec.urls.map { try GoIMEndpoint($0) }
        let logs = (0..<spec.count).map { _ in SessionLog() }
        var sessions: [GoIMSession] = []
        for index in 0..<spec.count {
            var configuration = GoIMConfiguration(
                endpoints: endpoints,
                credentials: .authBody(AuthBody(mid: spec.firstMid + Int64(index), roomID: spec.room, platform: "bench", accepts: [1000])))
            configuration.backoff = Backoff(base: .seconds(spec.backoffBase), max: .seconds(spec.backoffMax))
            configuration.heartbeat = .seconds(spec.heartbeat)
            configuration.recoverUser = false
            configuration.eventLoopGroup = group
            sessions.append(try GoIMSession(configuration))
        }
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                while !stdinClosed.closed {
                    emit(progress(logs))
                    try? await Task.sleep(for: .milliseconds(250))
                }
            }
            let start = ContinuousClock.now
            for (index, session) in sessions.enumerated() where !stdinClosed.closed {
                if spec.rate > 0 {
                    let due = start + .seconds(Double(index) / spec.rate)
                    if due > .now { try? await Task.sleep(until: due) }
                }
                let log = logs[index]
                tasks.addTask { for await message in session.messages where message.operation == 1000 { log.deliver(message) } }
                tasks.addTask { for await state in session.states { log.record(state) } }
                session.start()
            }
            while !stdinClosed.closed { try? await Task.sleep(for: .milliseconds(100)) }
            var final = progress(logs)
            final.results = logs.map { $0.result() }
            emit(final)
            // Closing finishes each session's streams, which ends its two consumers; all at once, so that the
            // process exits soon after its report.
            await withDiscardingTaskGroup { closing in
                for session in sessions { closing.addTask { await session.close() } }
            }
            tasks.cancelAll()
        }
        try? await group.shutdownGracefully()
    }

    /// One line at a time: the final line (hundreds of kB) is written in many `write(2)`s, and a progress line
    /// written meanwhile by the progress task would land inside it and make it unreadable.
    private static let output = NIOLock()

    static func emit(_ line: StormLine) {
        var data = (try? JSONEncoder().encode(line)) ?? Data()
        data.append(UInt8(ascii: "\n"))
        output.withLock { FileHandle.standardOutput.write(data) }
    }

    static func progress(_ logs: [SessionLog]) -> StormLine {
        var line = StormLine()
        for log in logs {
            let (ready, connected, last) = log.status
            if ready { line.ready += 1 }
            if connected { line.connected += 1 }
            line.lastOffsets[last, default: 0] += 1
        }
        return line
    }
}

/// One session's record, written by its two consumers and read by the progress loop.
final class SessionLog: Sendable {
    private struct State {
        var result = StormSessionResult()
        var connected = false
        var epoch = ""
        var lastOffset: UInt64 = 0
        /// Offsets and push numbers delivered, by index: the runs are short (hundreds), an array beats a set.
        var offsets: [Bool] = []
        var numbers: [Bool] = []
    }

    private let state = Mutex(State())

    var status: (ready: Bool, connected: Bool, lastOffset: UInt64) {
        state.withLock { ($0.connected && !$0.epoch.isEmpty, $0.connected, $0.lastOffset) }
    }

    func record(_ event: GoIMState) {
        let now = wallNanoseconds()
        state.withLock { state in
            switch event {
            case .connected(_, let standing):
                state.connected = true
                state.result.connects.append(now)
                if let standing {
                    if !state.epoch.isEmpty, standing.epoch != state.epoch { state.result.epochChanges += 1 }
                    state.epoch = standing.epoch
                    if state.result.connects.count > 1, standing.recovering, !standing.recovered { state.result.incomplete += 1 }
                }
            case .disconnected, .closed:
                state.connected = false
            case .connecting:
                state.result.attempts.append(now)
            case .roomChanged:
                break
            }
        }
    }

    func deliver(_ message: GoIMMessage) {
        guard message.stream == .room else { return }
        let number = Int(message.text) ?? 0
        state.withLock { state in
            let offset = Int(message.offset)
            if offset < state.offsets.count, state.offsets[offset] {
                state.result.duplicates += 1
                return
            }
            if message.offset < state.lastOffset { state.result.outOfOrder += 1 }
            if offset >= state.offsets.count { state.offsets.append(contentsOf: repeatElement(false, count: offset + 1 - state.offsets.count)) }
            state.offsets[offset] = true
            state.lastOffset = max(state.lastOffset, message.offset)
            // The same push under a second offset (written twice into history) is a duplicate too.
            guard number > 0 else { return }
            if number >= state.numbers.count { state.numbers.append(contentsOf: repeatElement(false, count: number + 1 - state.numbers.count)) }
            if state.numbers[number] { state.result.duplicates += 1 }
            state.numbers[number] = true
        }
    }

    func result() -> StormSessionResult {
        state.withLock { state in
            var result = state.result
            var low: Int?
            for (offset, seen) in state.offsets.enumerated() {
                if seen, low == nil { low = offset }
                if !seen, let start = low {
                    result.ranges.append([UInt64(start), UInt64(offset - 1)])
                    low = nil
                }
            }
            if let start = low { result.ranges.append([UInt64(start), UInt64(state.offsets.count - 1)]) }
            return result
        }
    }
}

// MARK: - parent side

/// The child processes: `goim-bench reconnect-storm --child --spec <json>`, a `StormLine` per line on stdout, exit
/// when stdin closes (or the parent dies: `StdinWatcher`).
final class StormChildren: Sendable {
    private let children: ChildProcesses<StormLine>

    init(specs: [StormSpec]) throws {
        children = try ChildProcesses(subcommand: "reconnect-storm", specs: specs) { $0.results != nil }
    }

    func total() -> StormLine {
        children.latestLines.values.reduce(into: StormLine()) { $0.add($1) }
    }

    func wait(timeout: Duration, progress: (StormLine) -> Void, until condition: (StormLine) -> Bool) async -> StormLine {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let now = total()
            if condition(now) { return now }
            progress(now)
            try? await Task.sleep(for: .milliseconds(250))
        }
        return total()
    }

    /// Closes the children's stdin and returns every session's result (a child that sent none within 60 s is killed
    /// and named on stderr with what it last reported).
    func stop() async -> [StormSessionResult] {
        let children = self.children
        await children.stop(timeout: .seconds(60)) {
            children.finalLines.count >= children.processes.count && !children.processes.contains(where: \.isRunning)
        }
        let finals = children.finalLines
        let latest = children.latestLines
        for (index, process) in children.processes.enumerated() where finals[index] == nil {
            let last = latest[index].map { "\($0.connected) connected, \($0.ready) ready" } ?? "nothing"
            FileHandle.standardError.write(Data(
                "child \(index) (pid \(process.processIdentifier), \(process.isRunning ? "still running" : "exited \(process.terminationStatus)")) sent no results; it last reported \(last)\n".utf8))
        }
        children.killRemaining()
        return finals.keys.sorted().flatMap { finals[$0]?.results ?? [] }
    }
}

/// The figures of a run, from every session's result and the time of the kill.
struct StormAnalysis {
    /// Seconds from the kill to each session's first `.connected` after it (nil: never back).
    var delays: [Double?]
    var sessions: Int
    var lost: [Int]
    var duplicates: [Int]
    var outOfOrder: [Int]
    var incomplete: [Int]
    var epochChanges: Int
    /// Connection attempts of each session from the kill until it was back.
    var attempts: [Int]
    /// Seconds from the kill to each session's first attempt after it.
    var firstAttempts: [Double?]
    static let bucket = 0.25

    init(results: [StormSessionResult], sessions: Int, killed: UInt64, first: UInt64, top: UInt64) {
        self.sessions = sessions
        delays = results.map { result in result.connects.first { $0 > killed }.map { Double($0 - killed) / 1e9 } }
        lost = results.map { result in
            // Offsets history held that no range covers.
            guard top >= first else { return 0 }
            var covered: UInt64 = 0
            for range in result.ranges where range.count == 2 {
                let low = max(range[0], first), high = min(range[1], top)
                if high >= low { covered += high - low + 1 }
            }
            return Int(top - first + 1 - covered)
        }
        attempts = results.map { result in
            let back = result.connects.first { $0 > killed } ?? .max
            return result.attempts.filter { $0 > killed && $0 <= back }.count
        }
        firstAttempts = results.map { result in result.attempts.first { $0 > killed }.map { Double($0 - killed) / 1e9 } }
        duplicates = results.map(\.duplicates)
        outOfOrder = results.map(\.outOfOrder)
        incomplete = results.map(\.incomplete)
        epochChanges = results.reduce(0) { $0 + $1.epochChanges }
    }

    /// Sessions back per 250 ms bucket since the kill.
    var curve: [Int] { Self.buckets(delays.compactMap { $0 }) }
    /// Sessions' first attempts after the kill per 250 ms bucket: when the backoff's jitter let them try.
    var attemptCurve: [Int] { Self.buckets(firstAttempts.compactMap { $0 }) }

    static func buckets(_ delays: [Double]) -> [Int] {
        guard let last = delays.max() else { return [] }
        var counts = [Int](repeating: 0, count: Int(last / bucket) + 1)
        for delay in delays { counts[Int(delay / bucket)] += 1 }
        return counts
    }

    /// Seconds by which `percent` of all the sessions (not only of those back) were back; nil when fewer came back.
    func time(percent: Double) -> Double? {
        let back = delays.compactMap { $0 }.sorted()
        let needed = Int((Double(sessions) * percent / 100).rounded(.up))
        guard needed >= 1, needed <= back.count else { return nil }
        return back[needed - 1]
    }

    /// The figures; the curve too when `curve` (JSON: the text output prints it as a table).
    func add(to report: inout Report, curve includeCurve: Bool) {
        report.add("results from sessions", Double(delays.count))
        report.add("reconnected", Double(delays.compactMap { $0 }.count), "sessions")
        report.add("attempts per session until back: mean", Double(attempts.reduce(0, +)) / Double(max(1, attempts.count)))
        report.add("attempts per session until back: max", Double(attempts.max() ?? 0))
        report.add("sessions back at the first attempt", Double(attempts.filter { $0 == 1 }.count))
        for percent in [50.0, 90, 99, 100] {
            report.add("\(Int(percent)) % back by", time(percent: percent) ?? -1, "s")
        }
        for (name, values) in [("lost", lost), ("duplicates", duplicates), ("out of order", outOfOrder), ("incomplete recoveries", incomplete)] {
            report.add("\(name): total", Double(values.reduce(0, +)), "messages")
            report.add("\(name): sessions", Double(values.filter { $0 > 0 }.count))
        }
        report.add("epoch changes", Double(epochChanges))
        let attempted = attemptCurve
        for (index, count) in curve.enumerated() where includeCurve {
            let from = Double(index) * Self.bucket
            report.add(String(format: "attempts in [%.2f, %.2f) s", from, from + Self.bucket), Double(index < attempted.count ? attempted[index] : 0), "sessions")
            report.add(String(format: "back in [%.2f, %.2f) s", from, from + Self.bucket), Double(count), "sessions")
        }
    }

    /// The curve as a table with bars (text output).
    func printCurve() {
        print("\n   per 250 ms since the kill: sessions making their first attempt, sessions back (a time of -1 above: that share never came back)")
        print("   from (s)  attempts   back   cumulative")
        let attempted = attemptCurve
        var cumulative = 0
        for index in 0..<max(curve.count, attempted.count) {
            let count = index < curve.count ? curve[index] : 0
            cumulative += count
            let bar = String(repeating: "#", count: Int((Double(count) / Double(max(1, sessions)) * 200).rounded(.up)))
            print(String(format: "   %7.2f  %8d  %5d  %6.1f %%  ", Double(index) * Self.bucket, index < attempted.count ? attempted[index] : 0, count,
                         Double(cumulative) / Double(max(1, sessions)) * 100) + bar)
        }
    }
}
