import ArgumentParser
import Foundation
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@main
struct GoIMBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "goim-bench",
        abstract: "Load and latency benchmarks for swift-goim (or any goim-compatible server), loopback by default.",
        subcommands: [Fanout.self, EndToEnd.self, Idle.self, Storm.self, ReconnectStorm.self, Clients.self, Push.self, Limit.self])
}

/// Options shared by the scenarios that open client connections.
struct ClientOptions: ParsableArguments {
    @Option(help: "Connections to open in all.") var clients = 2000
    @Option(help: "Client processes to spread them over (each holds at most ~19,500).") var processes = 1
    @Option(help: "Comet TCP ports, comma-separated (connections are spread over them).") var tcpPorts = "3101"
    @Option(help: "Comet WebSocket ports, comma-separated.") var wsPorts = "3102"
    @Option(help: "tcp, ws or mix.") var transport = "tcp"
    @Option(help: "Target hosts, comma-separated; several 127.0.0.x give more ephemeral ports.") var hosts = "127.0.0.1"
    @Option(help: "Connections per second while opening (0 = as fast as possible).") var connectRate: Double = 0
    @Option(help: "Room every client joins.") var room = "test://1"
    @Option(help: "Heartbeat period in seconds (goim's JS client: 30; 0 = none).") var heartbeat: Double = 30
    @Option(help: "First mid.") var firstMid: Int64 = 1
    @Flag(help: "Allow targets outside 127.0.0.0/8.") var allowRemote = false

    func spec() throws -> FleetSpec {
        var spec = FleetSpec()
        spec.hosts = hosts.split(separator: ",").map(String.init)
        if !allowRemote, let bad = spec.hosts.first(where: { !$0.hasPrefix("127.") && $0 != "localhost" && $0 != "::1" }) {
            throw ValidationError("\(bad) is not a loopback address; pass --allow-remote to target it")
        }
        spec.tcpPorts = tcpPorts.split(separator: ",").compactMap { Int($0) }
        spec.wsPorts = wsPorts.split(separator: ",").compactMap { Int($0) }
        spec.transport = transport
        spec.count = clients
        spec.rate = connectRate
        spec.room = room
        spec.heartbeat = heartbeat
        spec.firstMid = firstMid
        guard ["tcp", "ws", "mix"].contains(transport) else { throw ValidationError("--transport is tcp, ws or mix") }
        return spec
    }

    /// Starts the client processes and waits until every connection authenticated (or `timeout`).
    func start(timeout: Duration = .seconds(180), engine: String = "nio") async throws -> ChildFleet {
        var spec = try self.spec()
        spec.engine = engine
        let perProcess = (clients + max(1, processes) - 1) / max(1, processes)
        if perProcess > 19_500 {
            throw ValidationError("\(perProcess) connections per process exceeds the 20,000 descriptor limit: raise --processes")
        }
        let fleet = try ChildFleet(specs: ChildFleet.split(spec, processes: processes))
        let started = ContinuousClock.now
        let ready = await fleet.wait(timeout: timeout, progress: { s in
            progressLine("connecting: \(s.authed)/\(clients) authenticated, \(s.failed) failed")
        }) { $0.authed + $0.failed >= clients }
        endProgress()
        let seconds = (ContinuousClock.now - started).secondsValue
        FileHandle.standardError.write(Data("connected: \(ready.authed)/\(clients) authenticated in \(String(format: "%.1f", seconds)) s (\(ready.failed) failed)\n".utf8))
        return fleet
    }
}

struct CometProcessOption: ParsableArguments {
    @Option(help: "pid of the comet under test: its CPU and RSS are read from /proc.") var cometPid: Int32?
}

extension Duration {
    var secondsValue: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

// MARK: - fanout

struct Fanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Room fan-out straight to comet's gRPC BroadcastRoom (goim's scenario), with the C limit beside it.")

    @OptionGroup var client: ClientOptions
    @OptionGroup var comet: CometProcessOption
    @Option(help: "Comet gRPC address.") var grpc = "127.0.0.1:3109"
    @Option(help: "BroadcastRoom calls per second.") var rate: Double = 40
    @Option(help: "Number of BroadcastRoom calls.") var rounds = 400
    @Option(help: "Messages per call (an OpRaw batch, as job sends under load).") var packets = 1
    @Option(help: "Message body size in bytes (at least 8: it carries the send time).") var body = 10
    @Flag(help: "Also run fanout-limit.c with the same connections, rounds and packets per write.") var withLimit = false
    @Option(help: "Path of fanout-limit.c.") var limitSource: String?
    @Flag(help: "Send what job sends for a room with history: offsets in the inner seq, a history epoch (a fresh one per run).")
    var history = false
    @Flag(help: "JSON output.") var json = false

    func run() async throws {
        _ = raiseFileLimit()
        let before = comet.cometPid.flatMap { ProcStats.read(pid: $0) }
        let fleet = try await client.start()
        let authed = fleet.total().authed
        let connectedStats = comet.cometPid.flatMap { ProcStats.read(pid: $0) }
        let parts = grpc.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--grpc is host:port") }
        let pusher = CometPusher(host: String(parts[0]), port: port)
        let cpu0 = comet.cometPid.flatMap { ProcStats.read(pid: $0) }
        let started = ContinuousClock.now
        let ok = try await pusher.broadcastRoom(
            room: client.room, operation: 1000, bodySize: body, packets: packets, rate: rate, rounds: rounds,
            historyEpoch: history ? "bench-\(UInt32.random(in: 0...UInt32.max))" : nil
        ) { round in
            if round % 40 == 0 {
                let s = fleet.total()
                progressLine("round \(round)/\(rounds): \(s.received) delivered")
            }
        }
        let expected = authed * ok * packets
        let final = await fleet.wait(timeout: .seconds(30)) { $0.received >= expected }
        let elapsed = (ContinuousClock.now - started).secondsValue
        let cpu1 = comet.cometPid.flatMap { ProcStats.read(pid: $0) }
        endProgress()
        let stopped = await fleet.stop()
        let delivered = max(final.received, stopped.received)

        var report = Report(scenario: "fanout")
        report.parameters = ["clients": "\(client.clients)", "rate": "\(rate)/s", "rounds": "\(rounds)",
                             "packets per call": "\(packets)", "body": "\(body) B", "transport": client.transport,
                             "history": history ? "on" : "off"]
        report.add("authenticated", Double(authed), "connections")
        report.add("BroadcastRoom calls ok", Double(ok))
        report.add("delivered", Double(delivered), "messages")
        report.add("expected", Double(expected), "messages")
        report.add("delivered/expected", expected > 0 ? Double(delivered) / Double(expected) : 0)
        report.add("throughput", Double(delivered) / elapsed, "messages/s")
        report.addLatency(stopped.latency.totalCount > 0 ? stopped.latency : final.latency)
        var cometRate: Double?
        if let cpu0, let cpu1 {
            let cpu = cpu1.cpuSeconds - cpu0.cpuSeconds
            report.add("comet CPU", cpu, "s")
            report.add("comet CPU per second", cpu / elapsed, "s/s")
            if cpu > 0 {
                cometRate = Double(delivered) / cpu
                report.add("deliveries per comet CPU-second", cometRate!)
            }
        }
        if let before, let connectedStats, authed > 0 {
            report.add("comet RSS per connection", Double(connectedStats.rssBytes - before.rssBytes) / Double(authed) / 1024, "kB")
        }
        if withLimit {
            let limit = try FanoutLimit.run(source: limitSource, connections: authed, rounds: rounds, packets: packets,
                                            paceMicros: Int(1_000_000 / rate), body: body)
            report.add("limit: deliveries per writer CPU-second", limit.deliveriesPerCPUSecond)
            report.add("limit: us per write", limit.microsecondsPerWrite, "us")
            if let cometRate { report.add("ratio to limit", cometRate / limit.deliveriesPerCPUSecond) }
        }
        report.print(json: json)
    }
}

// MARK: - end to end

struct EndToEnd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e", abstract: "Room, all or mids pushes through logic's HTTP API to clients: delivery and latency (HTTP accepted -> received).")

    @OptionGroup var client: ClientOptions
    @Option(help: "Logic HTTP address.") var logic = "127.0.0.1:3111"
    @Option(help: "Pushes per second.") var rate: Double = 20
    @Option(help: "Seconds to push for.") var duration: Double = 60
    @Option(help: "Message body size.") var body = 32
    @Option(help: "room (the clients' room), all (/goim/push/all) or mids (each push to one client's mid, in turn).")
    var route = "room"
    @Flag(help: "JSON output.") var json = false

    func run() async throws {
        _ = raiseFileLimit()
        guard ["room", "all", "mids"].contains(route) else { throw ValidationError("--route is room, all or mids") }
        let fleet = try await client.start()
        let authed = fleet.total().authed
        let (type, id) = splitRoom(client.room)
        let parts = logic.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--logic is host:port") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let poster = try await HTTPPoster.connect(host: String(parts[0]), port: port, group: group)
        let total = Int(rate * duration)
        var accepted = 0
        var failures = 0
        let start = ContinuousClock.now
        for i in 0..<total {
            let due = start + .seconds(Double(i) / rate)
            if due > .now { try await Task.sleep(until: due) }
            let path =
                switch route {
                case "all": "/goim/push/all?operation=1000"
                case "mids": "/goim/push/mids?operation=1000&mids=\(client.firstMid + Int64(i % max(1, client.clients)))"
                default: "/goim/push/room?operation=1000&type=\(type)&room=\(id)"
                }
            let (status, text) = try await poster.post(path, body: Stamp.body(size: body))
            if status == 200 && text.contains("\"code\":0") { accepted += 1 } else { failures += 1 }
            if i % 20 == 0 { progressLine("pushed \(i + 1)/\(total), delivered \(fleet.total().received)") }
        }
        // A mids push reaches one client (when every client authenticated).
        let expected = route == "mids" ? accepted * authed / max(1, client.clients) : accepted * authed
        let final = await fleet.wait(timeout: .seconds(30)) { $0.received >= expected }
        endProgress()
        await poster.close()
        try await group.shutdownGracefully()
        let stopped = await fleet.stop()
        var report = Report(scenario: "e2e \(route) push via HTTP")
        report.parameters = ["clients": "\(client.clients)", "rate": "\(rate)/s", "duration": "\(duration) s", "room": client.room, "route": route]
        report.add("authenticated", Double(authed), "connections")
        report.add("pushes accepted", Double(accepted))
        report.add("push failures", Double(failures))
        let delivered = max(final.received, stopped.received)
        report.add("delivered", Double(delivered), "messages")
        report.add("delivered/expected", expected > 0 ? Double(delivered) / Double(expected) : 0)
        report.addLatency(stopped.latency.totalCount > 0 ? stopped.latency : final.latency)
        report.print(json: json)
    }
}

func splitRoom(_ room: String) -> (String, String) {
    guard let range = room.range(of: "://") else { return ("test", room) }
    return (String(room[..<range.lowerBound]), String(room[range.upperBound...]))
}

// MARK: - idle

struct Idle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Idle authenticated connections heartbeating: comet RSS per connection and CPU per connection-second.")

    @OptionGroup var client: ClientOptions
    @OptionGroup var comet: CometProcessOption
    @Option(help: "Seconds to measure CPU over once connected.") var window: Double = 60
    @Flag(help: "JSON output.") var json = false

    func run() async throws {
        _ = raiseFileLimit()
        guard let pid = comet.cometPid, let baseline = ProcStats.read(pid: pid) else {
            throw ValidationError("--comet-pid is needed (and must be a running process)")
        }
        let fleet = try await client.start()
        let authed = fleet.total().authed
        try await Task.sleep(for: .seconds(2))
        guard let s0 = ProcStats.read(pid: pid) else { throw BenchError.message("comet \(pid) is gone") }
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(window) {
            try await Task.sleep(for: .seconds(1))
            let t = fleet.total()
            progressLine("idle: \(t.authed) authenticated, \(t.disconnects) disconnects, \(Int((ContinuousClock.now - start).secondsValue))/\(Int(window)) s")
        }
        endProgress()
        guard let s1 = ProcStats.read(pid: pid) else { throw BenchError.message("comet \(pid) is gone") }
        let elapsed = (ContinuousClock.now - start).secondsValue
        let during = fleet.total()
        _ = await fleet.stop()
        var report = Report(scenario: "idle connections")
        report.parameters = ["clients": "\(client.clients)", "heartbeat": "\(client.heartbeat) s", "window": "\(window) s"]
        report.add("authenticated", Double(authed), "connections")
        report.add("disconnects during window", Double(during.disconnects))
        report.add("comet RSS baseline", Double(baseline.rssBytes) / 1_048_576, "MiB")
        report.add("comet RSS connected", Double(s1.rssBytes) / 1_048_576, "MiB")
        if authed > 0 {
            report.add("RSS per connection", Double(s1.rssBytes - baseline.rssBytes) / Double(authed) / 1024, "kB")
            report.add("CPU per connection per second", (s1.cpuSeconds - s0.cpuSeconds) / elapsed / Double(authed) * 1e6, "us")
        }
        report.print(json: json)
    }
}

// MARK: - storm

struct Storm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect storm: authenticated connections per second through comet, logic and Redis.")

    @OptionGroup var client: ClientOptions
    @OptionGroup var comet: CometProcessOption
    @Option(help: "pid of logic: its CPU per connection is reported.") var logicPid: Int32?
    @Option(help: "raw (TCP: blocking connect and auth, cheapest for the bench) or nio (full goim clients).")
    var engine = "raw"
    @Flag(help: "JSON output.") var json = false

    func run() async throws {
        _ = raiseFileLimit()
        guard ["raw", "nio"].contains(engine) else { throw ValidationError("--engine is raw or nio") }
        guard engine == "nio" || client.transport == "tcp" else { throw ValidationError("--engine raw is TCP only") }
        let cometBefore = comet.cometPid.flatMap(ProcStats.read)
        let logicBefore = logicPid.flatMap(ProcStats.read)
        let started = ContinuousClock.now
        let fleet = try await client.start(timeout: .seconds(300), engine: engine)
        let elapsed = (ContinuousClock.now - started).secondsValue
        let cometAfter = comet.cometPid.flatMap(ProcStats.read)
        let logicAfter = logicPid.flatMap(ProcStats.read)
        let total = fleet.total()
        _ = await fleet.stop()
        var report = Report(scenario: "connect storm")
        report.parameters = [
            "clients": "\(client.clients)", "processes": "\(client.processes)", "transport": client.transport, "engine": engine,
        ]
        report.add("authenticated", Double(total.authed), "connections")
        report.add("failed", Double(total.failed), "connections")
        // From the first attempt to the last authentication, as the client processes timed them (the wait for
        // their progress lines rounds `elapsed` up by up to half a second).
        let seconds = total.connectSeconds > 0 ? total.connectSeconds : elapsed
        report.add("connect time", seconds, "s")
        report.add("rate", Double(total.authed) / seconds, "connections/s")
        let connections = Double(max(1, total.authed))
        if let cometBefore, let cometAfter {
            report.add("comet CPU", (cometAfter.cpuSeconds - cometBefore.cpuSeconds) / connections * 1e6, "µs/connection")
        }
        if let logicBefore, let logicAfter {
            report.add("logic CPU", (logicAfter.cpuSeconds - logicBefore.cpuSeconds) / connections * 1e6, "µs/connection")
        }
        report.print(json: json)
    }
}

// MARK: - clients

struct Clients: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open connections, authenticate, heartbeat and count what arrives, until the duration ends.")

    @OptionGroup var client: ClientOptions
    @Option(help: "Seconds to stay connected.") var duration: Double = 60
    @Flag(help: "JSON output.") var json = false
    @Flag(help: .hidden) var child = false
    @Option(help: .hidden) var spec: String?

    func run() async throws {
        _ = raiseFileLimit()
        if child { return try await runChild() }
        let fleet = try await client.start()
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(duration) {
            try await Task.sleep(for: .seconds(1))
            let t = fleet.total()
            progressLine("alive \(t.authed - t.disconnects) received \(t.received) disconnects \(t.disconnects)")
        }
        endProgress()
        let total = await fleet.stop()
        var report = Report(scenario: "clients")
        report.parameters = ["clients": "\(client.clients)", "duration": "\(duration) s"]
        report.add("authenticated", Double(total.authed))
        report.add("failed", Double(total.failed))
        report.add("disconnects", Double(total.disconnects))
        report.add("received", Double(total.received), "messages")
        report.addLatency(total.latency)
        report.print(json: json)
    }

    /// Child mode: open the fleet described by --spec, print a JSON snapshot every second, and exit
    /// (after a final snapshot) when stdin closes.
    func runChild() async throws {
        guard let spec, let decoded = try? JSONDecoder().decode(FleetSpec.self, from: Data(spec.utf8)) else {
            throw ValidationError("--child needs --spec JSON")
        }
        let raw = decoded.engine == "raw" ? RawFleet(spec: decoded) : nil
        let fleet = Fleet(spec: decoded, threads: 1)
        let stats = raw?.stats ?? fleet.stats
        let stdinClosed = StdinWatcher()
        let encoder = JSONEncoder()
        func emit(final: Bool) {
            let line = ChildLine(final: final, snapshot: stats.snapshot())
            var data = try! encoder.encode(line)
            data.append(UInt8(ascii: "\n"))
            FileHandle.standardOutput.write(data)
        }
        await withTaskGroup(of: Void.self) { tasks in
            if let raw {
                tasks.addTask { await raw.open() }
            } else {
                tasks.addTask { await fleet.open() }
                tasks.addTask { await fleet.heartbeatLoop() }
            }
            tasks.addTask {
                while !stdinClosed.closed {
                    emit(final: false)
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
            while !stdinClosed.closed { try? await Task.sleep(for: .milliseconds(100)) }
            tasks.cancelAll()
        }
        emit(final: true)
        raw?.closeAll()
        await fleet.closeAll()
    }
}

/// Reads stdin on its own thread until EOF (the parent closed the pipe or died).
final class StdinWatcher: Sendable {
    private let flag = NIOLockedBool()

    init() {
        let flag = self.flag
        let parent = getppid()
        Thread.detachNewThread {
            // A parent that dies (killed mid-connect, say) reads no report: exit at once rather than hold tens of
            // thousands of sockets into the next run. Its death is checked every 200 ms, not only at stdin's EOF:
            // a sibling child may hold our stdin pipe open.
            var buffer = [UInt8](repeating: 0, count: 256)
            var descriptor = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
            while true {
                if getppid() != parent { _exit(3) }
                guard poll(&descriptor, 1, 200) > 0 else { continue }
                if read(0, &buffer, buffer.count) <= 0 { break }
            }
            // A dying parent's pipes close before the kernel hands us to a new parent: give that a moment.
            for _ in 0..<50 {
                if getppid() != parent { _exit(3) }
                usleep(10_000)
            }
            flag.set()
        }
    }

    var closed: Bool { flag.value }
}

import NIOConcurrencyHelpers

final class NIOLockedBool: Sendable {
    private let box = NIOLockedValueBox(false)
    func set() { box.withLockedValue { $0 = true } }
    var value: Bool { box.withLockedValue { $0 } }
}

// MARK: - push

struct Push: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Drive logic's push HTTP API at a rate: accepted pushes per second.")

    @Option(help: "Logic HTTP address.") var logic = "127.0.0.1:3111"
    @Option(help: "room, all, mids or keys.") var route = "mids"
    @Option(help: "Pushes per second in all (0 = as fast as possible).") var rate: Double = 0
    @Option(help: "Seconds to run.") var duration: Double = 10
    @Option(help: "Body size.") var size = 32
    @Option(help: "Parallel HTTP connections.") var connections = 8
    @Option(help: "Room (room route).") var room = "test://1"
    @Option(help: "Targets for mids/keys: first mid or key index, and how many distinct to cycle through.") var targets = 1000
    @Flag(help: "JSON output.") var json = false

    func run() async throws {
        let parts = logic.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--logic is host:port") }
        guard parts[0].hasPrefix("127.") || parts[0] == "localhost" else { throw ValidationError("loopback only") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (type, id) = splitRoom(room)
        let route = self.route, rate = self.rate, duration = self.duration, size = self.size, targets = self.targets
        let connections = self.connections
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: (Int, Int).self) { tasks in
            for c in 0..<connections {
                tasks.addTask {
                    let poster = try await HTTPPoster.connect(host: String(parts[0]), port: port, group: group)
                    var ok = 0, failed = 0, i = c
                    while ContinuousClock.now - start < .seconds(duration) {
                        if rate > 0 {
                            let due = start + .seconds(Double(i) / rate)
                            if due > .now { try await Task.sleep(until: due) }
                        }
                        let path: String
                        switch route {
                        case "room": path = "/goim/push/room?operation=1000&type=\(type)&room=\(id)"
                        case "all": path = "/goim/push/all?operation=1000"
                        case "keys": path = "/goim/push/keys?operation=1000&keys=bench-\(i % targets)"
                        default: path = "/goim/push/mids?operation=1000&mids=\(1 + i % targets)"
                        }
                        let (status, text) = try await poster.post(path, body: Stamp.body(size: size))
                        if status == 200 && text.contains("\"code\":0") { ok += 1 } else { failed += 1 }
                        i += connections
                    }
                    await poster.close()
                    return (ok, failed)
                }
            }
            var total = (0, 0)
            for try await (ok, failed) in tasks { total.0 += ok; total.1 += failed }
            return total
        }
        let elapsed = (ContinuousClock.now - start).secondsValue
        try await group.shutdownGracefully()
        var report = Report(scenario: "push via HTTP")
        report.parameters = ["route": route, "rate": rate > 0 ? "\(rate)/s" : "max", "connections": "\(connections)", "body": "\(size) B"]
        report.add("accepted", Double(results.0))
        report.add("failed", Double(results.1))
        report.add("accepted per second", Double(results.0) / elapsed, "pushes/s")
        report.print(json: json)
    }
}

// MARK: - limit

struct Limit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run fanout-limit.c, this machine's fan-out limit (an ideal C writer).")

    @Option(help: "Connections.") var clients = 2000
    @Option(help: "Rounds.") var rounds = 400
    @Option(help: "Packets per write.") var packets = 1
    @Option(help: "Microseconds between rounds.") var paceUs = 25000
    @Option(help: "Body size.") var body = 10
    @Option(help: "Path of fanout-limit.c.") var limitSource: String?

    func run() async throws {
        _ = raiseFileLimit()
        let result = try FanoutLimit.run(source: limitSource, connections: clients, rounds: rounds, packets: packets,
                                         paceMicros: paceUs, body: body)
        print(result.line)
    }
}
