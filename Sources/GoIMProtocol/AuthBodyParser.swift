/// Reads an auth body the way Go's `encoding/json` fills goim's `AuthParams` struct, so the
/// same bodies are accepted and refused as by goim's Logic. Foundation's JSONDecoder differs
/// (it accepts trailing commas and `1e3` for an integer, keeps the first duplicate key, and its
/// errors do not name the field), hence this small reader.
///
/// Go rules kept: strict JSON grammar, one top-level value and only whitespace after it;
/// a top-level `null` decodes to the defaults; keys match exactly, else ignoring case; a later
/// duplicate key wins; `null` leaves a field unchanged (`accepts` becomes empty); integers are
/// plain decimal literals in range (`1.5`, `1e3` and overflow fail); invalid UTF-8 and lone
/// surrogates become U+FFFD; nesting deeper than 10000 fails.
struct AuthBodyParser {
    private let bytes: [UInt8]
    private var index = 0
    /// Go's `maxNestingDepth`.
    private static let maxDepth = 10_000

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func parse() throws(ProtocolError) -> AuthBody {
        var body = AuthBody()
        skipWhitespace()
        switch peek() {
        case UInt8(ascii: "{"):
            index += 1
            try parseFields(into: &body)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
        default:
            throw kindOfValue().map { .invalidAuthBody("expected a JSON object, found \($0)") } ?? unexpected()
        }
        skipWhitespace()
        guard index == bytes.count else { throw unexpected() }
        return body
    }

    private mutating func parseFields(into body: inout AuthBody) throws(ProtocolError) {
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            let name = try parseKey()
            switch AuthBody.CodingKeys(rawValue: name) ?? AuthBody.CodingKeys(rawValue: name.lowercased()) {
            case .mid: body.mid = try parseInteger(field: "mid") ?? body.mid
            case .key: body.key = try parseString(field: "key") ?? body.key
            case .roomID: body.roomID = try parseString(field: "room_id") ?? body.roomID
            case .platform: body.platform = try parseString(field: "platform") ?? body.platform
            case .accepts: body.accepts = try parseAccepts()
            case nil: try skipValue()
            }
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"):
                index += 1
                return
            default: throw unexpected()
            }
        }
    }

    /// `"name" :` with the whitespace around it; returns the name.
    private mutating func parseKey() throws(ProtocolError) -> String {
        skipWhitespace()
        guard peek() == UInt8(ascii: "\"") else { throw unexpected() }
        let name = try parseStringLiteral()
        skipWhitespace()
        guard peek() == UInt8(ascii: ":") else { throw unexpected() }
        index += 1
        skipWhitespace()
        return name
    }

    // MARK: Field values

    /// An integer field; nil for `null`.
    private mutating func parseInteger<T: FixedWidthInteger>(field: String) throws(ProtocolError) -> T? {
        switch peek() {
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return nil
        case UInt8(ascii: "-"), .some(UInt8(ascii: "0")...UInt8(ascii: "9")):
            let literal = try scanNumber()
            guard let value = T(literal, radix: 10) else {
                throw .invalidAuthBody("field \"\(field)\": \(literal) is not an \(String(describing: T.self).lowercased())")
            }
            return value
        default:
            throw typeMismatch(field: field, expected: "an integer")
        }
    }

    /// A string field; nil for `null`.
    private mutating func parseString(field: String) throws(ProtocolError) -> String? {
        switch peek() {
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return nil
        case UInt8(ascii: "\""):
            return try parseStringLiteral()
        default:
            throw typeMismatch(field: field, expected: "a string")
        }
    }

    private mutating func parseAccepts() throws(ProtocolError) -> [Int32] {
        switch peek() {
        case UInt8(ascii: "n"):
            try expectLiteral("null")  // Go sets a slice to nil
            return []
        case UInt8(ascii: "["):
            index += 1
        default:
            throw typeMismatch(field: "accepts", expected: "an array of integers")
        }
        var accepts: [Int32] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            index += 1
            return accepts
        }
        while true {
            skipWhitespace()
            accepts.append(try parseInteger(field: "accepts[\(accepts.count)]") ?? 0)
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"):
                index += 1
                return accepts
            default: throw unexpected()
            }
        }
    }

    // MARK: JSON grammar

    /// Validates and skips one value of any kind (unknown fields), without recursion.
    private mutating func skipValue() throws(ProtocolError) {
        var closers: [UInt8] = []  // the bracket that closes each open container
        while true {
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                // +1 for the top-level object, +1 for this container.
                guard closers.count + 2 <= Self.maxDepth else {
                    throw .invalidAuthBody("invalid JSON at byte \(index): nested deeper than \(Self.maxDepth)")
                }
                let close = peek() == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
                index += 1
                skipWhitespace()
                if peek() == close {
                    index += 1
                } else {
                    closers.append(close)
                    if close == UInt8(ascii: "}") { _ = try parseKey() }
                    continue
                }
            case UInt8(ascii: "\""): _ = try parseStringLiteral()
            case UInt8(ascii: "-"), .some(UInt8(ascii: "0")...UInt8(ascii: "9")): _ = try scanNumber()
            case UInt8(ascii: "t"): try expectLiteral("true")
            case UInt8(ascii: "f"): try expectLiteral("false")
            case UInt8(ascii: "n"): try expectLiteral("null")
            default: throw unexpected()
            }
            // A value is complete: close finished containers, then go on with the next element.
            while true {
                guard let close = closers.last else { return }
                skipWhitespace()
                if peek() == close {
                    index += 1
                    closers.removeLast()
                    continue
                }
                guard peek() == UInt8(ascii: ",") else { throw unexpected() }
                index += 1
                if close == UInt8(ascii: "}") { _ = try parseKey() }
                break
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, returned as text.
    private mutating func scanNumber() throws(ProtocolError) -> String {
        let start = index
        if peek() == UInt8(ascii: "-") { index += 1 }
        if peek() == UInt8(ascii: "0") {
            index += 1
        } else {
            try scanDigits()
        }
        if peek() == UInt8(ascii: ".") {
            index += 1
            try scanDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            try scanDigits()
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    /// One or more decimal digits.
    private mutating func scanDigits() throws(ProtocolError) {
        guard let byte = peek(), isDigit(byte) else { throw unexpected() }
        while let byte = peek(), isDigit(byte) { index += 1 }
    }

    /// A string literal starting at the opening quote, with escapes decoded.
    private mutating func parseStringLiteral() throws(ProtocolError) -> String {
        index += 1  // the opening quote, checked by the caller
        var text: [UInt8] = []
        while let byte = peek() {
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: text, as: UTF8.self)  // invalid UTF-8 becomes U+FFFD, as in Go
            case UInt8(ascii: "\\"):
                try appendEscape(to: &text)
            case 0..<0x20:
                index -= 1
                throw unexpected()
            default:
                text.append(byte)
            }
        }
        throw unexpected()
    }

    private mutating func appendEscape(to text: inout [UInt8]) throws(ProtocolError) {
        guard let byte = peek() else { throw unexpected() }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): text.append(byte)
        case UInt8(ascii: "b"): text.append(0x08)
        case UInt8(ascii: "f"): text.append(0x0c)
        case UInt8(ascii: "n"): text.append(0x0a)
        case UInt8(ascii: "r"): text.append(0x0d)
        case UInt8(ascii: "t"): text.append(0x09)
        case UInt8(ascii: "u"):
            let unit = try parseHex4()
            var scalar = Unicode.Scalar(unit)  // nil for a surrogate
            if (0xd800..<0xdc00).contains(unit), let low = lowSurrogateEscape() {
                scalar = Unicode.Scalar(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))
            }
            UTF8.encode(scalar ?? "\u{FFFD}") { text.append($0) }  // a lone surrogate becomes U+FFFD, as in Go
        default:
            index -= 1
            throw unexpected()
        }
    }

    private mutating func parseHex4() throws(ProtocolError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = peek(), let digit = hexValue(byte) else { throw unexpected() }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// Consumes a following `\uDC00`…`\uDFFF` escape and returns its value; nil (consuming nothing) otherwise.
    private mutating func lowSurrogateEscape() -> UInt32? {
        guard index + 6 <= bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
            return nil
        }
        var value: UInt32 = 0
        for byte in bytes[(index + 2)..<(index + 6)] {
            guard let digit = hexValue(byte) else { return nil }
            value = value << 4 | UInt32(digit)
        }
        guard (0xdc00..<0xe000).contains(value) else { return nil }
        index += 6
        return value
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(ProtocolError) {
        let expected = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        for byte in expected {
            guard peek() == byte else { throw unexpected() }
            index += 1
        }
    }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d { index += 1 }
    }

    private func peek() -> UInt8? {
        index < bytes.count ? bytes[index] : nil
    }

    private func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: Errors

    /// What kind of JSON value starts at the current byte, for type-mismatch messages.
    private func kindOfValue() -> String? {
        switch peek() {
        case UInt8(ascii: "{"): "an object"
        case UInt8(ascii: "["): "an array"
        case UInt8(ascii: "\""): "a string"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): "a boolean"
        case UInt8(ascii: "-"), .some(UInt8(ascii: "0")...UInt8(ascii: "9")): "a number"
        default: nil
        }
    }

    private func typeMismatch(field: String, expected: String) -> ProtocolError {
        guard let found = kindOfValue() else { return unexpected() }
        return .invalidAuthBody("field \"\(field)\" must be \(expected), found \(found)")
    }

    /// A syntax error at the current byte.
    private func unexpected() -> ProtocolError {
        guard let byte = peek() else { return .invalidAuthBody("invalid JSON: unexpected end of input") }
        let shown = (0x21..<0x7f).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
        return .invalidAuthBody("invalid JSON at byte \(index): unexpected \(shown)")
    }
}
