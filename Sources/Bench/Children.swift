import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Client processes: one process may hold at most ~19,500 connections (20,000 descriptors), and spreading
/// clients over processes spreads their CPU too. Each child is `goim-bench clients --child --spec <json>`;
/// it prints one JSON `FleetSnapshot` line per second and exits when its stdin closes.
final class ChildFleet: Sendable {
    private let processes: [Process]
    private let inputs: [Pipe]
    private let latest: NIOLockedValueBox<[Int: FleetSnapshot]>
    private let finals: NIOLockedValueBox<[Int: FleetSnapshot]>

    init(specs: [FleetSpec]) throws {
        #if os(Linux)
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        #else
        let executable = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        #endif
        var processes: [Process] = []
        var inputs: [Pipe] = []
        let latest = NIOLockedValueBox<[Int: FleetSnapshot]>([:])
        let finals = NIOLockedValueBox<[Int: FleetSnapshot]>([:])
        for (index, spec) in specs.enumerated() {
            let process = Process()
            process.executableURL = executable
            let json = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
            process.arguments = ["clients", "--child", "--spec", json]
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
                    guard let snapshot = try? JSONDecoder().decode(ChildLine.self, from: line) else { continue }
                    latest.withLockedValue { $0[index] = snapshot.snapshot }
                    if snapshot.final { finals.withLockedValue { $0[index] = snapshot.snapshot } }
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

    /// The sum of the children's latest reports.
    func total() -> FleetSnapshot {
        latest.withLockedValue { all in
            var sum = FleetSnapshot()
            for snapshot in all.values { sum.add(snapshot) }
            return sum
        }
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
        for input in inputs { try? input.fileHandleForWriting.close() }
        for _ in 0..<300 where processes.contains(where: \.isRunning) {
            try? await Task.sleep(for: .milliseconds(100))
        }
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        return finals.withLockedValue { all in
            var sum = FleetSnapshot()
            for snapshot in all.values { sum.add(snapshot) }
            return sum
        }.authed > 0 ? finalTotal() : total()
    }

    private func finalTotal() -> FleetSnapshot {
        finals.withLockedValue { all in
            var sum = FleetSnapshot()
            for snapshot in all.values { sum.add(snapshot) }
            return sum
        }
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
