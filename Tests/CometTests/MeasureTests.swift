import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMClient
import GoIMProtocol
import GoIMRPC
import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import TestLogic
import Testing

/// Measurements, not tests: skipped unless `COMET_MEASURE=1`. Build in release for meaningful numbers:
///
///     swift build -c release --scratch-path .build-comet --build-tests -Xswiftc -enable-testing
///     COMET_MEASURE=1 COMET_MEASURE_CONNECTIONS=10000 \
///       swift test -c release --scratch-path .build-comet --skip-build --filter measure
///
/// The comet runs as its own process (the built `comet` executable) so its RSS and CPU are its own; the clients and
/// a test Logic run in the test process.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["COMET_MEASURE"] != nil))
struct MeasureTests {
    static var connections: Int {
        Int(ProcessInfo.processInfo.environment["COMET_MEASURE_CONNECTIONS"] ?? "") ?? 10_000
    }

    @Test("measure: connection rate, RSS and idle CPU per connection")
    func measureIdleConnections() async throws {
        try await withMeasuredComet { comet in
            let count = Self.connections
            let baseline = comet.rss()
            let cpuBefore = comet.cpuSeconds()
            let started = ContinuousClock.now
            let clients = try await comet.connect(count: count, room: { "live://\($0 % 100)" })
            let elapsed = ContinuousClock.now - started
            let cpuConnect = comet.cpuSeconds() - cpuBefore
            try await Task.sleep(for: .seconds(3))
            let loaded = comet.rss()
            print(String(format: "MEASURE connections=%d connect+auth: %.0f conn/s wall, comet CPU %.1f µs/conn",
                         count, Double(count) / elapsed.seconds, cpuConnect / Double(count) * 1e6))
            print(String(format: "MEASURE rss baseline=%.1f MB loaded=%.1f MB per-connection=%.0f bytes",
                         Double(baseline) / 1e6, Double(loaded) / 1e6, Double(loaded - baseline) / Double(count)))

            // Idle: every client heartbeats once per 30 s (goim's JS client), spread evenly.
            let window = 30.0
            let cpuIdleStart = comet.cpuSeconds()
            let idleStart = ContinuousClock.now
            let perTick = max(1, clients.count / Int(window * 10))
            var next = 0
            while (ContinuousClock.now - idleStart).seconds < window {
                for _ in 0..<perTick {
                    clients[next % clients.count].sendAndForget(Packet(operation: .heartbeat, sequence: 1))
                    next += 1
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            let idleSeconds = (ContinuousClock.now - idleStart).seconds
            let idleCPU = comet.cpuSeconds() - cpuIdleStart
            print(String(format: "MEASURE idle (heartbeat/30s): comet CPU %.2f µs per connection per second (%d heartbeats)",
                         idleCPU / idleSeconds / Double(count) * 1e6, next))
            print(String(format: "MEASURE rss after heartbeats=%.1f MB", Double(comet.rss()) / 1e6))
            for client in clients { client.channel.close(promise: nil) }
        }
    }

    @Test("measure: room fan-out, 2,000 TCP clients, 40 BroadcastRoom/s, 10-byte body")
    func measureFanout() async throws {
        try await withMeasuredComet { comet in
            let count = Int(ProcessInfo.processInfo.environment["COMET_MEASURE_FANOUT"] ?? "") ?? 2000
            let received = Atomic<Int>(0)
            let clients = try await comet.connect(count: count, room: { _ in "test://1" }) { _ in
                received.add(1, ordering: .relaxed)
            }
            let seconds = Int(ProcessInfo.processInfo.environment["COMET_MEASURE_SECONDS"] ?? "") ?? 10
            let rate = 40
            // COMET_MEASURE_PERF=<file>: record a CPU profile of the comet during the run (perf record -g).
            if let perfFile = ProcessInfo.processInfo.environment["COMET_MEASURE_PERF"], let pid = comet.process.pid {
                let perf = Process()
                perf.executableURL = URL(fileURLWithPath: "/usr/bin/perf")
                perf.arguments = ["record", "-g", "-p", "\(pid)", "-o", perfFile, "--", "sleep", "\(max(1, seconds - 2))"]
                perf.standardOutput = FileHandle.nullDevice
                perf.standardError = FileHandle.nullDevice
                try perf.run()
            }
            var request = Goim_Comet_BroadcastRoomReq()
            request.roomID = "test://1"
            let cpuBefore = comet.cpuSeconds()
            let started = ContinuousClock.now
            for round in 0..<(seconds * rate) {
                request.proto = Goim_Protocol_Proto(version: 1, operation: 1000, sequence: 0, body: Array("{\"t\":\(round % 10)}xx".utf8.prefix(10)))
                _ = try await comet.rpc.broadcastRoom(request)
                let due = started + .milliseconds((round + 1) * 1000 / rate)
                try await Task.sleep(until: due, clock: .continuous)
            }
            let expected = seconds * rate * count
            let deadline = ContinuousClock.now + .seconds(20)
            while received.load(ordering: .relaxed) < expected && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let cpu = comet.cpuSeconds() - cpuBefore
            let delivered = received.load(ordering: .relaxed)
            print(String(format: "MEASURE fanout clients=%d rounds=%d delivered=%d/%d (%.2f%%) comet CPU %.2f s -> %.0f deliveries per CPU-second",
                         count, seconds * rate, delivered, expected, Double(delivered) / Double(expected) * 100, cpu,
                         Double(delivered) / cpu))
            for client in clients { client.channel.close(promise: nil) }
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

struct MeasuredComet: Sendable {
    let process: ServerProcess
    let tcpPort: Int
    let rpc: Goim_Comet_Comet.Client<HTTP2ClientTransport.Posix>

    func rss() -> Int {
        guard let pid = process.pid, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }

    func cpuSeconds() -> Double {
        guard let pid = process.pid, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After ")": state is field 3; utime is 14 and stime 15 (1-based), i.e. offsets 11 and 12 here.
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Opens `count` TCP clients (200 at a time) and authenticates each.
    func connect(count: Int, room: @Sendable (Int) -> String, onPacket: (@Sendable (ReceivedPacket) -> Void)? = nil) async throws
        -> [GoIMClient]
    {
        try await withThrowingTaskGroup(of: GoIMClient.self) { group in
            var clients: [GoIMClient] = []
            clients.reserveCapacity(count)
            for index in 0..<count {
                if index >= 200 { clients.append(try await group.next()!) }
                let roomID = room(index)
                group.addTask {
                    let client = try await GoIMClient.connect(
                        port: tcpPort, delivery: onPacket.map { .handler($0) } ?? .count)
                    try await client.auth(
                        AuthBody(mid: Int64(index), key: "m-\(index)", roomID: roomID, platform: "bench", accepts: [1000]),
                        timeout: .seconds(60))
                    return client
                }
            }
            while let client = try await group.next() { clients.append(client) }
            return clients
        }
    }
}

func withMeasuredComet(_ body: @Sendable (MeasuredComet) async throws -> Void) async throws {
    let logic = TestLogic()
    let logicServer = GRPCTestServer(logic: logic)
    let logicPort = try await logicServer.start()
    defer { logicServer.stop() }
    let directory = try TestServers.temporaryDirectory("comet-measure")
    let tcpPort = TestServers.freePort()
    let rpcPort = TestServers.freePort()
    let config = directory.appendingPathComponent("comet.toml")
    try """
    [log]
    level = "warning"
    [env]
    host = "measure-comet"
    [tcp]
    bind = ["127.0.0.1:\(tcpPort)"]
    [websocket]
    bind = ["127.0.0.1:\(TestServers.freePort())"]
    [rpcServer]
    addr = "127.0.0.1:\(rpcPort)"
    [rpcClient]
    addrs = ["127.0.0.1:\(logicPort)"]
    timeout = "60s"
    [protocol]
    handshakeTimeout = "60s"
    [monitor]
    addr = "127.0.0.1:\(TestServers.freePort())"
    """.write(to: config, atomically: true, encoding: .utf8)
    let process = try TestServers.executable("comet", arguments: ["--config", config.path], port: tcpPort)
    try await process.start()
    defer { process.stopInBackground() }
    let rpcClient = GRPCClient(
        transport: try .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: rpcPort), transportSecurity: .plaintext))
    let rpcTask = Task { try await rpcClient.runConnections() }
    defer {
        rpcClient.beginGracefulShutdown()
        rpcTask.cancel()
    }
    // Let the comet settle (first RenewOnline, registration attempts) before the baseline.
    try await Task.sleep(for: .seconds(2))
    try await body(MeasuredComet(process: process, tcpPort: tcpPort, rpc: Goim_Comet_Comet.Client(wrapping: rpcClient)))
}
