/// Durations in Go syntax, as goim's TOML files write them: `500ms`, `8s`, `4m`, `2h`, `1h30m`, `1.5s`.
/// Units: ns, us (or µs), ms, s, m, h. A bare `0` is allowed; any other number needs a unit.
public enum GoDuration {
    public static func parse(_ text: String) -> Duration? {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        var negative = false
        if rest.first == "-" || rest.first == "+" {
            negative = rest.first == "-"
            rest = rest.dropFirst()
        }
        if rest == "0" { return .zero }
        if rest.isEmpty { return nil }
        var totalNanoseconds: Double = 0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { !($0.isNumber || $0 == ".") }
            rest = rest.dropFirst(unit.count)
            let scale: Double
            switch unit {
            case "ns": scale = 1
            case "us", "µs", "μs": scale = 1e3
            case "ms": scale = 1e6
            case "s": scale = 1e9
            case "m": scale = 60e9
            case "h": scale = 3600e9
            default: return nil
            }
            totalNanoseconds += value * scale
        }
        guard totalNanoseconds < 9.2e18 else { return nil }
        let duration = Duration.nanoseconds(Int64(totalNanoseconds.rounded()))
        return negative ? .zero - duration : duration
    }

    /// Formats a duration the way Go would print a round value (`8s`, `500ms`, `4m0s` is written `4m`).
    public static func format(_ duration: Duration) -> String {
        let ns = duration.nanoseconds
        if ns == 0 { return "0s" }
        for (unit, size) in [("h", Int64(3600_000_000_000)), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)]
        where ns % size == 0 {
            return "\(ns / size)\(unit)"
        }
        return "\(ns)ns"
    }
}

extension Duration {
    /// Whole nanoseconds (saturating), the unit goim's gRPC messages carry.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product + attoseconds / 1_000_000_000
    }
}

#if canImport(Foundation)
import Foundation
#endif
