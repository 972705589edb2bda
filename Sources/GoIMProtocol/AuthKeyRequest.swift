import NIOCore

/// A client that let the server generate its key (no `key` in its auth body) cannot be pushed to by key unless it
/// learns the key (goim bug 4: goim's op 8 body is always empty). A client asks for it with `"return_key": true` in
/// its op 7 JSON body (beside goim's fields, or beside `"token"` in jwt mode); the op 8 body is then
/// `{"key":"<key>"}`. goim's clients never send the field and get goim's empty op 8.
public enum AuthKeyRequest {
    /// Whether `body` holds `"return_key"` `:` `true` (JSON whitespace allowed around the colon). A byte scan, not a
    /// JSON parse: the comet only forwards the body to logic, which parses it; a body that only looks like it asks
    /// gets a key it could have had anyway.
    public static func isRequested(in body: some Collection<UInt8>) -> Bool {
        let bytes = Array(body)
        let name = Array(#""return_key""#.utf8)
        let value = Array("true".utf8)
        guard bytes.count >= name.count + 1 + value.count else { return false }
        var start = 0
        while start + name.count <= bytes.count {
            guard let found = firstIndex(of: name, in: bytes, from: start) else { return false }
            var index = found + name.count
            while index < bytes.count, isSpace(bytes[index]) { index += 1 }
            if index < bytes.count, bytes[index] == UInt8(ascii: ":") {
                index += 1
                while index < bytes.count, isSpace(bytes[index]) { index += 1 }
                if index + value.count <= bytes.count, Array(bytes[index..<index + value.count]) == value { return true }
            }
            start = found + 1
        }
        return false
    }

    /// The op 8 body for `key`: `{"key":"..."}`.
    public static func replyBody(key: String) -> ByteBuffer {
        var out = Array(#"{"key":"#.utf8)
        AuthBody.appendString(key, to: &out)
        out.append(UInt8(ascii: "}"))
        return ByteBuffer(bytes: out)
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
    }

    private static func firstIndex(of needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        var index = start
        while index + needle.count <= haystack.count {
            if haystack[index] == needle[0], Array(haystack[index..<index + needle.count]) == needle { return index }
            index += 1
        }
        return nil
    }
}
