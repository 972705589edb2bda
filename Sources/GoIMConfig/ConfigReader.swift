import Foundation
import TOMLKit

/// A parsed configuration value. Keys of tables are lower-cased: goim's TOML keys match case-insensitively
/// (`readBufSize`, `ReadBufSize` and `readbufsize` are one field), and so do ours.
public indirect enum ConfigValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case array([ConfigValue])
    case table([String: ConfigValue])

    var typeName: String {
        switch self {
        case .string: "a string"
        case .int: "an integer"
        case .double: "a float"
        case .bool: "a boolean"
        case .array: "an array"
        case .table: "a table"
        }
    }

    var text: String {
        switch self {
        case .string(let s): "\"\(s)\""
        case .int(let i): "\(i)"
        case .double(let d): "\(d)"
        case .bool(let b): "\(b)"
        case .array(let a): "[" + a.map(\.text).joined(separator: ", ") + "]"
        case .table: "{...}"
        }
    }

    init(_ toml: any TOMLValueConvertible) {
        if let table = toml.table {
            var entries: [String: ConfigValue] = [:]
            for (key, value) in table { entries[key.lowercased()] = ConfigValue(value) }
            self = .table(entries)
        } else if let array = toml.array {
            self = .array(array.map { ConfigValue($0) })
        } else if let bool = toml.bool {
            self = .bool(bool)
        } else if let int = toml.int {
            self = .int(int)
        } else if let double = toml.double {
            self = .double(double)
        } else if let string = toml.string {
            self = .string(string)
        } else {
            self = .string(toml.debugDescription)
        }
    }
}

/// Reads typed fields out of a TOML document with environment overrides, collecting every problem so that
/// one run reports all of them. Each field is read with its default; a field given in the file or in the
/// environment replaces it. The environment variable for `[section] key` is `GOIM_SECTION_KEY`
/// (upper case; nested tables add more parts, e.g. `GOIM_AUTH_JWT_SECRET`); lists are comma-separated.
public final class ConfigReader {
    public let source: String
    private let root: [String: ConfigValue]
    private let environment: [String: String]
    private(set) var errors: [ConfigError] = []
    private var used: Set<String> = []

    public init(toml text: String, source: String = "<config>", environment: [String: String] = [:]) throws(ConfigError) {
        self.source = source
        self.environment = environment
        do {
            let table = try TOMLTable(string: text)
            guard case .table(let entries) = ConfigValue(table) else { fatalError("a TOML document is a table") }
            self.root = entries
        } catch let error as TOMLParseError {
            throw .syntax(path: source, line: error.source.begin.line, column: error.source.begin.column, reason: error.description)
        } catch {
            throw .syntax(path: source, line: 0, column: 0, reason: "\(error)")
        }
    }

    /// Loads `path`, or an empty document (all defaults) when `path` is nil.
    public convenience init(path: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigError) {
        guard let path else {
            try self.init(toml: "", source: "<defaults>", environment: environment)
            return
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .fileNotReadable(path: path, reason: (error as NSError).localizedDescription)
        }
        try self.init(toml: text, source: path, environment: environment)
    }

    public func section(_ name: String) -> ConfigSection { ConfigSection(reader: self, path: [name]) }

    /// The top-level table (for keys outside any section).
    public var top: ConfigSection { ConfigSection(reader: self, path: []) }

    /// Keys present in the file that no field read: goim ignores them silently; we warn so typos show.
    public var unknownKeys: [String] {
        var keys: [String] = []
        func walk(_ table: [String: ConfigValue], prefix: String) {
            for (key, value) in table {
                let name = prefix.isEmpty ? key : "\(prefix).\(key)"
                if used.contains(name) { continue }
                if case .table(let inner) = value, used.contains(where: { $0.hasPrefix(name + ".") }) {
                    walk(inner, prefix: name)
                } else {
                    keys.append(name)
                }
            }
        }
        walk(root, prefix: "")
        return keys.sorted()
    }

    /// Throws every collected error at once.
    public func finish() throws(ConfigError) {
        switch errors.count {
        case 0: return
        case 1: throw errors[0]
        default: throw .several(errors)
        }
    }

    public func fail(_ error: ConfigError) { errors.append(error) }

    /// Marks goim keys that swift-goim accepts but does not need (e.g. `tcp.readBuf`), so they are not
    /// reported as unknown.
    public func acceptUnused(_ keys: [String]) {
        for key in keys { used.insert(key.lowercased()) }
    }

    func lookup(_ path: [String], _ key: String) -> (ConfigValue?, fromEnvironment: Bool) {
        let envName = "GOIM_" + (path + [key]).map { $0.uppercased() }.joined(separator: "_")
        let lowered = (path + [key]).map { $0.lowercased() }
        // Marked as read even when the environment wins, so the file's key is not reported as unknown.
        used.insert(lowered.joined(separator: "."))
        if let text = environment[envName] { return (.string(text), true) }
        var table = root
        for part in lowered.dropLast() {
            guard case .table(let inner)? = table[part] else { return (nil, false) }
            table = inner
        }
        return (table[lowered.last!], false)
    }
}

/// One `[section]` (or nested table) of a configuration, read field by field with defaults.
public struct ConfigSection {
    let reader: ConfigReader
    public let path: [String]

    public func field(_ key: String) -> String { (path + [key]).joined(separator: ".") }

    public func has(_ key: String) -> Bool { reader.lookup(path, key).0 != nil }

    public func string(_ key: String, default value: String) -> String {
        switch reader.lookup(path, key) {
        case (nil, _): return value
        case (.string(let s)?, _): return s
        case (let other?, _):
            reader.fail(.wrongType(field: field(key), expected: "a string", found: other.typeName))
            return value
        }
    }

    public func bool(_ key: String, default value: Bool) -> Bool {
        switch reader.lookup(path, key) {
        case (nil, _): return value
        case (.bool(let b)?, _): return b
        case (.string(let s)?, true):
            switch s.lowercased() {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default:
                reader.fail(.invalidValue(field: field(key), value: s, reason: "expected true or false"))
                return value
            }
        case (let other?, _):
            reader.fail(.wrongType(field: field(key), expected: "a boolean", found: other.typeName))
            return value
        }
    }

    public func int(_ key: String, default value: Int, in range: ClosedRange<Int>? = nil) -> Int {
        let result: Int
        switch reader.lookup(path, key) {
        case (nil, _): return value
        case (.int(let i)?, _): result = i
        case (.string(let s)?, true):
            guard let i = Int(s.trimmingCharacters(in: .whitespaces)) else {
                reader.fail(.invalidValue(field: field(key), value: s, reason: "expected an integer"))
                return value
            }
            result = i
        case (let other?, _):
            reader.fail(.wrongType(field: field(key), expected: "an integer", found: other.typeName))
            return value
        }
        if let range, !range.contains(result) {
            reader.fail(.invalidValue(field: field(key), value: "\(result)", reason: "must be between \(range.lowerBound) and \(range.upperBound)"))
            return value
        }
        return result
    }

    public func double(_ key: String, default value: Double) -> Double {
        switch reader.lookup(path, key) {
        case (nil, _): return value
        case (.double(let d)?, _): return d
        case (.int(let i)?, _): return Double(i)
        case (.string(let s)?, true):
            guard let d = Double(s) else {
                reader.fail(.invalidValue(field: field(key), value: s, reason: "expected a number"))
                return value
            }
            return d
        case (let other?, _):
            reader.fail(.wrongType(field: field(key), expected: "a number", found: other.typeName))
            return value
        }
    }

    /// A duration in Go syntax (`"8s"`, `"500ms"`, `"4m"`); a bare integer is taken as seconds.
    public func duration(_ key: String, default value: Duration, minimum: Duration? = nil) -> Duration {
        let result: Duration
        switch reader.lookup(path, key) {
        case (nil, _): return value
        case (.string(let s)?, _):
            guard let d = GoDuration.parse(s) else {
                reader.fail(.invalidValue(field: field(key), value: "\"\(s)\"", reason: "expected a duration such as \"500ms\", \"8s\", \"4m\" or \"2h\""))
                return value
            }
            result = d
        case (.int(let i)?, _): result = .seconds(i)
        case (let other?, _):
            reader.fail(.wrongType(field: field(key), expected: "a duration string", found: other.typeName))
            return value
        }
        if let minimum, result < minimum {
            reader.fail(.invalidValue(field: field(key), value: GoDuration.format(result), reason: "must be at least \(GoDuration.format(minimum))"))
            return value
        }
        return result
    }

    /// A list of strings: a TOML array, or one comma-separated string (as environment variables give it).
    public func strings(_ key: String, default value: [String]) -> [String] {
        switch reader.lookup(path, key) {
        case (nil, _): return value
        case (.string(let s)?, _):
            return s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case (.array(let items)?, _):
            var result: [String] = []
            for item in items {
                guard case .string(let s) = item else {
                    reader.fail(.wrongType(field: field(key), expected: "an array of strings", found: "an array holding \(item.typeName)"))
                    return value
                }
                result.append(s)
            }
            return result
        case (let other?, _):
            reader.fail(.wrongType(field: field(key), expected: "an array of strings", found: other.typeName))
            return value
        }
    }

    /// A list of integers: a TOML array, or one comma-separated string.
    public func ints(_ key: String, default value: [Int]) -> [Int] {
        switch reader.lookup(path, key) {
        case (nil, _): return value
        case (.string(let s)?, _):
            var result: [Int] = []
            for part in s.split(separator: ",") {
                guard let i = Int(part.trimmingCharacters(in: .whitespaces)) else {
                    reader.fail(.invalidValue(field: field(key), value: s, reason: "expected comma-separated integers"))
                    return value
                }
                result.append(i)
            }
            return result
        case (.array(let items)?, _):
            var result: [Int] = []
            for item in items {
                guard case .int(let i) = item else {
                    reader.fail(.wrongType(field: field(key), expected: "an array of integers", found: "an array holding \(item.typeName)"))
                    return value
                }
                result.append(i)
            }
            return result
        case (let other?, _):
            reader.fail(.wrongType(field: field(key), expected: "an array of integers", found: other.typeName))
            return value
        }
    }

    /// A table of string lists (goim's `[regions]`: region -> provinces).
    public func stringListTable() -> [String: [String]] {
        guard !path.isEmpty else { return [:] }
        let (value, _) = reader.lookup(Array(path.dropLast()), path.last!)
        guard case .table(let entries)? = value else { return [:] }
        var result: [String: [String]] = [:]
        for key in entries.keys { result[key] = strings(key, default: []) }
        return result
    }

    /// Records a validation failure for `key`.
    public func invalid(_ key: String, _ value: String, _ reason: String) {
        reader.fail(.invalidValue(field: field(key), value: value, reason: reason))
    }
}
