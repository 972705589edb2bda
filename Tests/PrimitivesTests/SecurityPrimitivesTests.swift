import Primitives
import Testing

@Suite("Loopback addresses and constant-time comparison")
struct LoopbackAndConstantTimeTests {
    @Test(arguments: ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"])
    func loopback(host: String) {
        #expect(IPAddressLiteral.isLoopback(host))
    }

    @Test(arguments: ["0.0.0.0", "", "::", "[::]", "10.0.0.1", "128.0.0.1", "::2", "example.org", "127.0.0.1.example.org"])
    func notLoopback(host: String) {
        #expect(!IPAddressLiteral.isLoopback(host))
    }

    @Test func constantTimeEquals() {
        #expect(ConstantTime.equals("s3cret", "s3cret"))
        #expect(!ConstantTime.equals("s3cret", "s3creT"))
        #expect(!ConstantTime.equals("s3cret", "s3cre"))
        #expect(ConstantTime.equals("", ""))
        #expect(ConstantTime.equals("ab"[...], "ab"))
    }
}
