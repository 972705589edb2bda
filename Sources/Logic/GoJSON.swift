import Primitives
/// A tiny JSON writer that produces the bytes Go's `encoding/json` produces for goim's replies: object keys
/// in the order given (struct field order, or sorted for Go maps), `<`, `>`, `&`, U+2028 and U+2029 escaped
/// as `\u003c`…, invalid UTF-8 replaced by U+FFFD, float32 values in their shortest form.
///
/// goim's HTTP callers parse the replies with JSON libraries, so byte equality is not required; it keeps
/// our replies identical to goim's in tests and in logs, which is cheap.
enum GoJSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case float32(Float)
    case string(String)
    case array([GoJSON])
    /// Keys are written in this order.
    case object([(String, GoJSON)])

    static func == (lhs: GoJSON, rhs: GoJSON) -> Bool { lhs.encoded() == rhs.encoded() }

    /// A Go map: keys sorted as Go sorts them (by bytes).
    static func map(_ entries: [String: GoJSON]) -> GoJSON {
        .object(entries.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) })
    }

    static func integer<I: BinaryInteger>(_ value: I) -> GoJSON { .int(Int64(value)) }

    func encoded() -> String {
        var out = ""
        write(into: &out)
        return out
    }

    func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .int(let value): out += String(value)
        case .float32(let value): out += Self.format(value)
        case .string(let value): Self.quote(value, into: &out)
        case .array(let items):
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += "," }
                item.write(into: &out)
            }
            out += "]"
        case .object(let entries):
            out += "{"
            for (index, (key, value)) in entries.enumerated() {
                if index > 0 { out += "," }
                Self.quote(key, into: &out)
                out += ":"
                value.write(into: &out)
            }
            out += "}"
        }
    }

    /// Go's float32 formatting: shortest representation, `e` notation outside [1e-6, 1e21).
    static func format(_ value: Float) -> String {
        guard value.isFinite else { return "null" }  // Go refuses to encode these; never produced here
        let magnitude = abs(value)
        if magnitude != 0 && (magnitude < 1e-6 || magnitude >= 1e21) {
            // Swift prints "1e-07"; Go prints "1e-07" too (two-digit exponent).
            return "\(value)"
        }
        var text = "\(value)"
        if text.hasSuffix(".0") { text.removeLast(2) }
        return text
    }

    static func quote(_ string: String, into out: inout String) {
        JSONText.quote(string, into: &out)
    }
}
