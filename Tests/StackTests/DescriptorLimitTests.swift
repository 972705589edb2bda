import Foundation
import GoIMClient
import GoIMProtocol
import TestSupport
import StackHarness
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A comet started with few file descriptors (`prlimit --nofile=300`), then offered more clients than it may hold.
/// Before the connection cap, such a comet burnt a core with no traffic, left the clients over the limit hanging in
/// the accept backlog, and its registry refresh failed with "Too many open files".
@Suite("comet at its file-descriptor limit", .startsServers)
struct DescriptorLimitTests {
    /// CPU seconds (user + system) the process has used so far, from /proc/<pid>/stat.
    static func cpuSeconds(pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        // After the command: state(0) ... utime(11) stime(12), in clock ticks.
        let ticks = Double(fields[11])! + Double(fields[12])!
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    enum Outcome: Equatable {
        case closed
        case stillOpen
    }

    /// Connects a plain TCP socket and waits up to `timeout` seconds for the server to close it (EOF or reset).
    static func connectUntilClosed(port: Int, timeout: Int) throws -> Outcome {
        let fd = try LoopbackSocket.connect(port: port, receiveTimeout: timeout)
        defer { close(fd) }
        var byte: UInt8 = 0
        let received = recv(fd, &byte, 1, 0)
        if received == 0 || (received < 0 && errno == ECONNRESET) { return .closed }
        return .stillOpen
    }

    @Test("the cap comes from ulimit -n; clients over it are refused within a second; CPU stays idle; pushes and registry keep working")
    func atTheLimit() async throws {
        var options = Stack.Options()
        options.cometLauncher = ["/usr/bin/prlimit", "--nofile=300:300"]
        // 300 - 100 = 200 clients; the rest of the descriptors are the comet's own (loops, listeners, Redis, gRPC).
        options.cometEnvironment = ["GOIM_LIMITS_RESERVEDDESCRIPTORS": "100"]
        try await Stack.run(options) { stack in
            let comet = stack.comets[0]
            #expect(comet.process.output.contains("goim.maxConnections=200"), "\(comet.process.output.suffix(2000))")
            let pid = try #require(comet.process.pid)

            var members: [Member] = []
            for index in 0..<200 {
                members.append(
                    try await Member.connect("fd", to: comet, webSocket: index % 4 == 0, mid: Int64(10_000 + index), room: "live://fd"))
            }
            // 100 more: each is closed at once (the comet takes the socket and closes it), none hangs.
            for _ in 0..<100 {
                let started = ContinuousClock.now
                #expect(try Self.connectUntilClosed(port: comet.tcpPort, timeout: 1) == .closed)
                #expect(ContinuousClock.now - started < .seconds(1))
            }

            // Idle at the cap: no spinning.
            let before = try Self.cpuSeconds(pid: pid)
            try await Task.sleep(for: .seconds(5))
            let used = try Self.cpuSeconds(pid: pid) - before
            #expect(used <= 0.05 * 5, "comet used \(used) CPU seconds in 5 s at its connection cap")

            // Pushes reach the clients it holds; the registry still sees it with its count.
            try await stack.push("/goim/push/room?operation=1000&type=live&room=fd", "at-the-cap")
            for member in members { try await member.receive("at-the-cap") }
            try await eventually("the registry shows 200 connections on \(comet.name)") {
                try await stack.get("/goim/online/total").body.contains("\"conn_count\":200")
            }
            #expect(!comet.process.output.contains("Too many open files"))
            for member in members { await member.client.close() }
        }
    }
}
