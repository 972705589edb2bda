import GoIMProtocol
import NIOCore
import Testing

@Suite("WatchOps: Sub/Unsub bodies")
struct WatchOpsTests {
    @Test(arguments: [
        ("1000", [Int32(1000)]),
        ("1000,1001,1002", [1000, 1001, 1002]),
        ("", []),
        ("-1,+2,0", [-1, 2, 0]),
        ("2147483647,-2147483648", [.max, .min]),
        ("1000,1000", [1000, 1000]),
    ])
    func parses(body: String, ops: [Int32]) {
        #expect(WatchOps.parse(ByteBuffer(string: body)) == ops)
    }

    /// goim changes nothing if any item fails to parse, so the whole body is rejected.
    @Test(arguments: ["1000,", ",1000", "1000,,1001", "1000, 1001", " 1000", "10a0", "2147483648", "+", "-", "1e3", "0x10", "1_000", ","])
    func rejects(body: String) {
        #expect(WatchOps.parse(ByteBuffer(string: body)) == nil)
    }

    @Test func rejectsInvalidUTF8() {
        #expect(WatchOps.parse(ByteBuffer(bytes: [0x31, 0xff])) == nil)
    }

    /// The byte parser agrees with `Int32(_:radix:)` (Go's `strconv.ParseInt(s, 10, 32)` on these inputs) item by item.
    @Test func agreesWithInt32Parsing() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("0123456789+-,9x ")
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...14, using: &generator)
            let body = String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
            let items = body.split(separator: ",", omittingEmptySubsequences: false).map { Int32($0, radix: 10) }
            let expected: [Int32]? = body.isEmpty ? [] : (items.contains(nil) ? nil : items.map { $0! })
            #expect(WatchOps.parse(ByteBuffer(string: body)) == expected, "body \"\(body)\"")
        }
    }

    @Test func bodyRoundTrips() {
        #expect(WatchOps.body([1000, 1001]) == ByteBuffer(string: "1000,1001"))
        #expect(WatchOps.parse(WatchOps.body([7, -3])) == [7, -3])
    }
}
