import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Child processes of goim-bench: each is `goim-bench <subcommand> --child --spec <json>`, prints one JSON line per
/// report on stdout, and exits when its stdin closes (so children never outlive a parent that was killed). Keeps each
/// child's latest line and its final one (`isFinal`).
final class ChildProcesses<Line: Decodable & Sendable>: Sendable {
    let processes: [Process]
    private let inputs: [Pipe]
    private let latest: NIOLockedValueBox<[Int: Line]>
    private let finals: NIOLockedValueBox<[Int: Line]>

    init<Spec: Encodable>(subcommand: String, specs: [Spec], isFinal: @escaping @Sendable (Line) -> Bool) throws {
        #if os(Linux)
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        #else
        let executable = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        #endif
        var processes: [Process] = []
        var inputs: [Pipe] = []
        let latest = NIOLockedValueBox<[Int: Line]>([:])
        let finals = NIOLockedValueBox<[Int: Line]>([:])
        for (index, spec) in specs.enumerated() {
            let process = Process()
            process.executableURL = executable
            let json = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
            process.arguments = [subcommand, "--child", "--spec", json]
            let input = Pipe()
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = FileHandle.standardError
            let buffer = NIOLockedValueBox(Data())
            output.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                let lines: [Data] = buffer.withLockedValue { pending in
                    if data.isEmpty { return [] }
                    pending.append(data)
                    var lines: [Data] = []
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        lines.append(pending[pending.startIndex..<newline])
                        pending.removeSubrange(pending.startIndex...newline)
                    }
                    return lines
                }
                for line in lines {
                    guard let decoded = try? JSONDecoder().decode(Line.self, from: line) else { continue }
                    latest.withLockedValue { $0[index] = decoded }
                    if isFinal(decoded) { finals.withLockedValue { $0[index] = decoded } }
                }
                if data.isEmpty { handle.readabilityHandler = nil }
            }
            try process.run()
            processes.append(process)
            inputs.append(input)
        }
        self.processes = processes
        self.inputs = inputs
        self.latest = latest
        self.finals = finals
    }

    /// Each child's latest line, by child index.
    var latestLines: [Int: Line] { latest.withLockedValue { $0 } }
    /// Each child's final line, by child index (children that sent none are missing).
    var finalLines: [Int: Line] { finals.withLockedValue { $0 } }

    /// Closes the children's stdin (they report a final line and exit), then waits until `done` holds or `timeout`
    /// passes, and kills those still running.
    func stop(timeout: Duration, until done: () -> Bool) async {
        for input in inputs { try? input.fileHandleForWriting.close() }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !done() {
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    func killRemaining() {
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// Client processes: one process may hold at most ~19,500 connections (20,000 descriptors), and spreading
/// clients over processes spreads their CPU too. Each child is `goim-bench clients --child --spec <json>`;
/// it prints one JSON `FleetSnapshot` line per second and exits when its stdin closes.
final class ChildFleet: Sendable {
    private let children: ChildProcesses<ChildLine>

    init(specs: [FleetSpec]) throws {
        children = try ChildProcesses(subcommand: "clients", specs: specs) { $0.final }
    }

    /// The sum of the children's latest reports.
    func total() -> FleetSnapshot {
        Self.sum(children.latestLines)
    }

    private static func sum(_ lines: [Int: ChildLine]) -> FleetSnapshot {
        var sum = FleetSnapshot()
        for line in lines.values { sum.add(line.snapshot) }
        return sum
    }

    /// Waits until `condition` holds for the total, or `timeout` passes.
    func wait(timeout: Duration, progress: (FleetSnapshot) -> Void = { _ in }, until condition: (FleetSnapshot) -> Bool) async -> FleetSnapshot {
        let deadline = ContinuousClock.now + timeout
        var last = ContinuousClock.now
        while ContinuousClock.now < deadline {
            let now = total()
            if condition(now) { return now }
            if ContinuousClock.now - last >= .seconds(1) {
                progress(now)
                last = .now
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return total()
    }

    /// Closes the children's stdin, waits for their final reports and exit.
    func stop() async -> FleetSnapshot {
        await children.stop(timeout: .seconds(30)) { !children.processes.contains(where: \.isRunning) }
        children.killRemaining()
        let finals = Self.sum(children.finalLines)
        return finals.authed > 0 ? finals : total()
    }

    /// Splits `spec.count` connections over `processes` children with disjoint mids.
    static func split(_ spec: FleetSpec, processes: Int) -> [FleetSpec] {
        let n = max(1, processes)
        var specs: [FleetSpec] = []
        var mid = spec.firstMid
        for i in 0..<n {
            var part = spec
            part.count = spec.count / n + (i < spec.count % n ? 1 : 0)
            part.firstMid = mid
            part.rate = spec.rate / Double(n)
            mid += Int64(part.count)
            if part.count > 0 { specs.append(part) }
        }
        return specs
    }
}

struct ChildLine: Codable {
    var final: Bool
    var snapshot: FleetSnapshot
}
