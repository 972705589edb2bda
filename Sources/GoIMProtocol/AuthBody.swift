import NIOCore

/// The JSON body of an op 7 auth packet, `{"mid","key","room_id","platform","accepts"}`.
///
/// `decode(_:)` follows Go's `encoding/json` as goim's Logic uses it
/// (see `AuthBodyParser`): missing keys and `null` keep the defaults, unknown keys are
/// ignored, keys match case-insensitively, and invalid JSON or a value of the wrong type fails.
/// goim checks no credentials: any well-formed body is accepted.
public struct AuthBody: Sendable, Equatable, Codable {
    /// Member (user) id; 0 means no per-user mapping.
    public var mid: Int64
    /// Connection key; empty means the server generates one.
    public var key: String
    /// Room to join (`"<type>://<id>"`); empty means none.
    public var roomID: String
    /// Only logged by goim.
    public var platform: String
    /// Initial watch set for key/mid pushes and broadcasts.
    public var accepts: [Int32]

    public init(mid: Int64 = 0, key: String = "", roomID: String = "", platform: String = "", accepts: [Int32] = []) {
        self.mid = mid
        self.key = key
        self.roomID = roomID
        self.platform = platform
        self.accepts = accepts
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case mid, key, roomID = "room_id", platform, accepts
    }

    /// For Swift-side JSON (tests, tools): missing keys default. Client bytes go through `decode`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            mid: try container.decodeIfPresent(Int64.self, forKey: .mid) ?? 0,
            key: try container.decodeIfPresent(String.self, forKey: .key) ?? "",
            roomID: try container.decodeIfPresent(String.self, forKey: .roomID) ?? "",
            platform: try container.decodeIfPresent(String.self, forKey: .platform) ?? "",
            accepts: try container.decodeIfPresent([Int32].self, forKey: .accepts) ?? []
        )
    }

    /// Decodes a client's auth body; every failure is ``ProtocolError/invalidAuthBody(_:)``
    /// with a reason that names the field or the byte offset.
    public static func decode(_ bytes: some Collection<UInt8>) throws(ProtocolError) -> AuthBody {
        var parser = AuthBodyParser(Array(bytes))
        return try parser.parse()
    }

    /// Decodes the readable bytes of `buffer`.
    public static func decode(_ buffer: ByteBuffer) throws(ProtocolError) -> AuthBody {
        try decode(buffer.readableBytesView)
    }

    /// Compact JSON in goim's field order, e.g. the Go bench client's
    /// `{"mid":1,"key":"","room_id":"test://1","platform":"ios","accepts":[1000,1001,1002]}`.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + key.utf8.count + roomID.utf8.count + platform.utf8.count + accepts.count * 11)
        out += #"{"mid":"#.utf8
        out += String(mid).utf8
        out += #","key":"#.utf8
        Self.appendString(key, to: &out)
        out += #","room_id":"#.utf8
        Self.appendString(roomID, to: &out)
        out += #","platform":"#.utf8
        Self.appendString(platform, to: &out)
        out += #","accepts":["#.utf8
        out += accepts.map(String.init).joined(separator: ",").utf8
        out += "]}".utf8
        return out
    }

    /// A JSON string literal; escapes what JSON requires (quote, backslash, control characters).
    static func appendString(_ string: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out += [UInt8(ascii: "\\"), byte]
            case UInt8(ascii: "\n"): out += #"\n"#.utf8
            case UInt8(ascii: "\r"): out += #"\r"#.utf8
            case UInt8(ascii: "\t"): out += #"\t"#.utf8
            case 0..<0x20:
                out += #"\u00"#.utf8 + [hex[Int(byte >> 4)], hex[Int(byte & 0xf)]]
            default:
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
