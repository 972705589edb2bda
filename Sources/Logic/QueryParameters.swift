/// A URL query parsed as Go's `url.ParseQuery` (which gin uses): pairs split on `&`, key and value
/// percent-decoded with `+` as a space; a pair with a bad escape or a `;` in its key is skipped.
struct QueryParameters: Sendable {
    private(set) var pairs: [(key: String, value: String)] = []

    init(_ query: String?) {
        guard let query else { return }
        for part in query.split(separator: "&", omittingEmptySubsequences: true) {
            if part.contains(";") { continue }  // Go 1.17+ refuses semicolons
            let key: Substring
            let value: Substring
            if let equals = part.firstIndex(of: "=") {
                key = part[..<equals]
                value = part[part.index(after: equals)...]
            } else {
                key = part
                value = ""
            }
            guard let decodedKey = Self.unescape(key), let decodedValue = Self.unescape(value) else { continue }
            pairs.append((decodedKey, decodedValue))
        }
    }

    /// Every value of `name`, in order.
    func all(_ name: String) -> [String] { pairs.filter { $0.key == name }.map(\.value) }

    /// The first value, as gin binds a scalar field; nil when absent.
    func first(_ name: String) -> String? { pairs.first { $0.key == name }?.value }

    func contains(_ name: String) -> Bool { pairs.contains { $0.key == name } }

    /// goim's list parameters are repeated keys (`mids=1&mids=2`); as an extension each value may also hold
    /// a comma-separated list (`mids=1,2`). Empty items are dropped.
    func list(_ name: String) -> [String] {
        all(name).flatMap { $0.split(separator: ",", omittingEmptySubsequences: true).map(String.init) }
    }

    static func unescape(_ text: Substring) -> String? {
        guard text.contains(where: { $0 == "%" || $0 == "+" }) else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default: bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
