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

    @Test func bodyRoundTrips() {
        #expect(WatchOps.body([1000, 1001]) == ByteBuffer(string: "1000,1001"))
        #expect(WatchOps.parse(WatchOps.body([7, -3])) == [7, -3])
    }
}
