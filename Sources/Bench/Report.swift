import Foundation
import Histogram

/// One result row: a name, a value and its unit, printed as a table or JSON.
struct Figure: Codable, Sendable {
    var name: String
    var value: Double
    var unit: String
}

struct Report: Codable, Sendable {
    var scenario: String
    var machine: String = Report.machineDescription()
    var parameters: [String: String] = [:]
    var figures: [Figure] = []

    mutating func add(_ name: String, _ value: Double, _ unit: String = "") {
        figures.append(Figure(name: name, value: value, unit: unit))
    }

    mutating func addLatency(_ histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else { return }
        add("latency p50", Double(histogram.valueAtPercentile(50)) / 1000, "ms")
        add("latency p99", Double(histogram.valueAtPercentile(99)) / 1000, "ms")
        add("latency p99.9", Double(histogram.valueAtPercentile(99.9)) / 1000, "ms")
        add("latency max", Double(histogram.max) / 1000, "ms")
    }

    func print(json: Bool) {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            Swift.print(String(decoding: try! encoder.encode(self), as: UTF8.self))
            return
        }
        Swift.print("\n== \(scenario) on \(machine)")
        for (key, value) in parameters.sorted(by: { $0.key < $1.key }) { Swift.print("   \(key) = \(value)") }
        let width = figures.map(\.name.count).max() ?? 10
        for figure in figures {
            let value = figure.value.rounded() == figure.value && abs(figure.value) < 1e15
                ? String(Int64(figure.value)) : String(format: "%.3f", figure.value)
            Swift.print("   \(figure.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(value) \(figure.unit)")
        }
    }

    static func machineDescription() -> String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        return "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(cpu)"
    }
}

/// A live progress line on stderr (overwritten in place).
func progressLine(_ text: String) {
    FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
}

func endProgress() { FileHandle.standardError.write(Data("\n".utf8)) }
