import GoIMProtocol
import NIOCore
import Testing

@Suite("AuthBody JSON")
struct AuthBodyTests {
    func decode(_ json: String) throws(ProtocolError) -> AuthBody {
        try AuthBody.decode(Array(json.utf8))
    }

    /// The reason of an `.invalidAuthBody` error, or nil for anything else.
    func failureReason(_ json: String) -> String? {
        do {
            _ = try decode(json)
            return nil
        } catch {
            guard case .invalidAuthBody(let reason) = error else { return nil }
            return reason
        }
    }

    @Test func jsClientBody() throws {
        #expect(try decode(jsAuthBody) == AuthBody(mid: 123, roomID: "live://1000", platform: "web", accepts: [1000, 1001, 1002]))
    }

    @Test func goBenchClientBody() throws {
        #expect(
            try decode(benchAuthBody) == AuthBody(mid: 1, key: "", roomID: "test://1", platform: "ios", accepts: [1000, 1001, 1002])
        )
    }

    @Test func missingFieldsDefault() throws {
        #expect(try decode("{}") == AuthBody())
        #expect(try decode(#"{"key":"abc"}"#) == AuthBody(key: "abc"))
    }

    @Test func nullKeepsDefaults() throws {
        #expect(try decode(#"{"mid":null,"accepts":null}"#) == AuthBody())
        #expect(try decode("null") == AuthBody())  // Go decodes a top-level null into the zero value
    }

    @Test func unknownFieldsAreIgnored() throws {
        let json = #"{"mid":5,"token":"x","nested":{"a":[1,2,{"b":null}]},"flag":true,"room_id":"live://1"}"#
        #expect(try decode(json) == AuthBody(mid: 5, roomID: "live://1"))
    }

    @Test func keysMatchCaseInsensitivelyLikeGo() throws {
        #expect(try decode(#"{"MID":7,"Room_ID":"live://2","Accepts":[1]}"#) == AuthBody(mid: 7, roomID: "live://2", accepts: [1]))
    }

    @Test func largeAndNegativeNumbers() throws {
        #expect(try decode(#"{"mid":9223372036854775807,"accepts":[-2147483648]}"#) == AuthBody(mid: .max, accepts: [.min]))
    }

    @Test func midAsStringNamesTheField() throws {
        let reason = try #require(failureReason(#"{"mid":"123"}"#))
        #expect(reason.contains("\"mid\""), "\(reason)")
    }

    @Test(arguments: [
        (#"{"key":5}"#, "key"),
        (#"{"room_id":["a"]}"#, "room_id"),
        (#"{"platform":{}}"#, "platform"),
        (#"{"accepts":"1000"}"#, "accepts"),
        (#"{"accepts":[1000,"1001"]}"#, "accepts[1]"),
        (#"{"accepts":[4294967296]}"#, "accepts[0]"),
        (#"{"mid":1.5}"#, "mid"),
        (#"{"mid":1e3}"#, "mid"),  // Go's ParseInt refuses exponents
        (#"{"mid":9223372036854775808}"#, "mid"),
        (#"{"mid":true}"#, "mid"),
    ])
    func wrongTypeNamesTheField(json: String, field: String) throws {
        let reason = try #require(failureReason(json))
        #expect(reason.contains("\"\(field)\""), "\(reason)")
    }

    @Test func exactReasons() {
        #expect(failureReason(#"{"mid":"123"}"#) == #"field "mid" must be an integer, found a string"#)
        #expect(failureReason(#"{"accepts":[1,2.5]}"#) == #"field "accepts[1]": 2.5 is not an int32"#)
        #expect(failureReason(#"{"mid":1,}"#) == "invalid JSON at byte 9: unexpected '}'")
        #expect(failureReason("") == "invalid JSON: unexpected end of input")
        #expect(failureReason("[1]") == "expected a JSON object, found an array")
    }

    /// Go's encoding/json refuses all of these (syntax errors or a non-object top level).
    @Test(arguments: [
        "", " ", "{", "}", "not json", #"{"mid":1,}"#, #"{"mid":1} x"#, #"{"mid":01}"#, #"{"mid":-}"#, #"{"mid":1.}"#,
        #"{mid:1}"#, #"{'mid':1}"#, #"{"mid" 1}"#, #"{"a":[1,]}"#, #"{"a":{"b":1,}}"#, #"{"a":tru}"#, #"{"a":"\x"}"#,
        #"{"a":"\u12"}"#, "{\"a\":\"tab\there\"}", "{\"a\":\"line\nbreak\"}", "[1,2]", "\"text\"", "12", "true",
        #"{"accepts":[1 2]}"#, #"{"key":"a""b"}"#,
    ])
    func invalidJSON(json: String) {
        #expect(failureReason(json) != nil)
    }

    @Test func duplicateKeysLastWins() throws {
        #expect(try decode(#"{"mid":1,"mid":2,"accepts":[1],"accepts":null}"#) == AuthBody(mid: 2))
    }

    @Test func stringEscapes() throws {
        let json = #"{"key":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00\ud800x","room_id":"\u0000"}"#
        let body = try decode(json)
        #expect(body.key == "a\"b\\c/d\u{8}\u{C}\n\r\té😀\u{FFFD}x")
        #expect(body.roomID == "\u{0}")
    }

    @Test func invalidUTF8BecomesReplacementCharacter() throws {
        var bytes = Array(#"{"key":""#.utf8)
        bytes += [0xff, 0x61]
        bytes += Array(#""}"#.utf8)
        #expect(try AuthBody.decode(bytes).key == "\u{FFFD}a")
    }

    @Test func deepUnknownValuesAreSkippedWithoutRecursion() throws {
        let depth = 9_998
        let json = #"{"x":"# + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + #","mid":3}"#
        #expect(try decode(json) == AuthBody(mid: 3))
        let tooDeep = #"{"x":"# + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}"
        #expect(failureReason(tooDeep)?.contains("nested deeper") == true)
    }

    @Test func encodedMatchesTheGoBenchClientBytes() throws {
        let body = try decode(benchAuthBody)
        #expect(String(decoding: body.encoded(), as: UTF8.self) == benchAuthBody)
    }

    @Test func encodedRoundTrips() throws {
        let body = AuthBody(mid: -42, key: "k\"\\\u{1}\n", roomID: "live://1000", platform: "wéb", accepts: [1000, -1])
        let bytes = body.encoded()
        #expect(String(decoding: bytes, as: UTF8.self)
            == #"{"mid":-42,"key":"k\"\\\u0001\n","room_id":"live://1000","platform":"wéb","accepts":[1000,-1]}"#)
        #expect(try AuthBody.decode(bytes) == body)
        #expect(try AuthBody.decode(ByteBuffer(bytes: bytes)) == body)
    }

    @Test func errorDescriptionIsReadable() {
        #expect(ProtocolError.invalidAuthBody("field \"mid\" is not an integer").description
            == "invalid auth body: field \"mid\" is not an integer")
    }
}
