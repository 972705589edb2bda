import GoIMProtocol
import NIOCore
import Testing

@Suite("Auth key request (\"return_key\": true)")
struct AuthKeyRequestTests {
    @Test(arguments: [
        #"{"mid":1,"room_id":"live://1","return_key":true}"#,
        #"{"return_key" : true, "mid":1}"#,
        "{\"token\":\"eyJ.x.y\",\n\t\"return_key\":\ttrue}",
        #"{"key":"return_key","return_key":true}"#,
    ])
    func requested(body: String) {
        #expect(AuthKeyRequest.isRequested(in: Array(body.utf8)))
    }

    @Test(arguments: [
        #"{"mid":1,"room_id":"live://1","accepts":[1000]}"#,
        #"{"return_key":false}"#,
        #"{"return_key":"true"}"#,
        #"{"return_keys":true}"#,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        "",
        #""return_key""#,
    ])
    func notRequested(body: String) {
        #expect(!AuthKeyRequest.isRequested(in: Array(body.utf8)))
    }

    @Test func replyBodyIsJSONWithTheKeyEscaped() {
        #expect(AuthKeyRequest.replyBody(key: "0b6e5c2a-1d4f-4e8a-9c3b-7f2e1a0d9c8b")
            == ByteBuffer(string: #"{"key":"0b6e5c2a-1d4f-4e8a-9c3b-7f2e1a0d9c8b"}"#))
        #expect(AuthKeyRequest.replyBody(key: "a\"b\\c") == ByteBuffer(string: #"{"key":"a\"b\\c"}"#))
    }
}
