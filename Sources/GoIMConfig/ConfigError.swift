/// A configuration problem, naming the field (`section.key`) and what is wrong with it.
public enum ConfigError: Error, Equatable, CustomStringConvertible {
    case fileNotReadable(path: String, reason: String)
    case syntax(path: String, line: Int, column: Int, reason: String)
    case wrongType(field: String, expected: String, found: String)
    case invalidValue(field: String, value: String, reason: String)
    case several([ConfigError])

    public var description: String {
        switch self {
        case .fileNotReadable(let path, let reason):
            return "cannot read config file \(path): \(reason)"
        case .syntax(let path, let line, let column, let reason):
            return "\(path):\(line):\(column): TOML syntax error: \(reason)"
        case .wrongType(let field, let expected, let found):
            return "config field \(field): expected \(expected), found \(found)"
        case .invalidValue(let field, let value, let reason):
            return "config field \(field) = \(value): \(reason)"
        case .several(let errors):
            return errors.map(\.description).joined(separator: "\n")
        }
    }
}
