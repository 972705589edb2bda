import Foundation

/// Builds and runs `fanout-limit.c` (an ideal C writer: one write per recipient) so fan-out figures can be
/// stated as a ratio to this machine's limit measured in the same session.
enum FanoutLimit {
    struct Result: Sendable {
        var deliveriesPerCPUSecond: Double
        var microsecondsPerWrite: Double
        var line: String
    }

    /// The repository's copy, `Benchmarks/fanout-limit/fanout-limit.c`, unless `--limit-source` or
    /// `GOIM_FANOUT_LIMIT_SRC` names another.
    static func sourcePath(_ explicit: String?) -> String? {
        if let explicit { return explicit }
        if let env = ProcessInfo.processInfo.environment["GOIM_FANOUT_LIMIT_SRC"], !env.isEmpty { return env }
        let relative = "Benchmarks/fanout-limit/fanout-limit.c"
        // The checkout this binary was built from (Sources/Bench/Limit.swift -> repository root), then the working directory.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let candidates = [root.appendingPathComponent(relative).path, FileManager.default.currentDirectoryPath + "/" + relative]
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    static func run(source: String?, connections: Int, rounds: Int, packets: Int, paceMicros: Int, body: Int) throws -> Result {
        guard let source = sourcePath(source), FileManager.default.fileExists(atPath: source) else {
            throw BenchError.message(
                "fanout-limit.c not found (Benchmarks/fanout-limit/fanout-limit.c): pass --limit-source PATH or set GOIM_FANOUT_LIMIT_SRC")
        }
        let binary = FileManager.default.temporaryDirectory.appendingPathComponent("goim-fanout-limit").path
        try shell("/usr/bin/cc", ["-O2", "-o", binary, source])
        let port = 20000 + Int.random(in: 0..<20000)
        let output = try shell(binary, ["\(connections)", "\(rounds)", "\(packets)", "\(paceMicros)", "\(body)", "\(port)"])
        guard let line = output.split(separator: "\n").first(where: { $0.contains("deliveries per writer CPU-second") }) else {
            throw BenchError.message("fanout-limit printed no result:\n\(output)")
        }
        let afterColon = line.split(separator: ":").last ?? ""
        let numbers = afterColon.split(whereSeparator: { $0 == " " || $0 == "," }).compactMap { Double($0) }
        guard numbers.count >= 2 else { throw BenchError.message("cannot parse: \(line)") }
        return Result(deliveriesPerCPUSecond: numbers[0], microsecondsPerWrite: numbers[1], line: String(line))
    }

    @discardableResult
    static func shell(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw BenchError.message("\(path) \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)):\n\(text)")
        }
        return text
    }
}

enum BenchError: Error, CustomStringConvertible {
    case message(String)
    var description: String {
        switch self { case .message(let text): text }
    }
}
