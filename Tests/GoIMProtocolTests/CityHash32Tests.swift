import GoIMProtocol
import Testing

@Suite("CityHash32 (reference Appendix A.1)")
struct CityHash32Tests {
    @Test(arguments: [
        ("", UInt32(3_696_677_242), 26, 58),
        ("a", 1_016_544_589, 13, 13),
        ("abcd", 2_562_006_677, 21, 21),
        ("test_key", 1_285_076_266, 10, 42),
        ("live://1000", 1_126_145_323, 11, 43),
        ("test://1", 4_274_401_948, 28, 28),
        ("test://test_room", 4_181_585_595, 27, 59),
        ("2f4c7a9e-8d3b-4c1a-9f2e-5b6d7c8e9f00", 2_695_949_679, 15, 47),
        ("abcdefghijklmnopqrstuvwxyz0123456789", 4_136_682_430, 30, 62),
    ])
    func vector(input: String, hash: UInt32, bucket: UInt32, shard: UInt32) {
        #expect(input.cityHash32 == hash)
        #expect(cityHash32(Array(input.utf8)) == hash)
        #expect(cityHash32(input.utf8) == hash)
        #expect(hash % 32 == bucket)
        #expect(hash % 64 == shard)
    }

    @Test func nonContiguousInputMatchesContiguous() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789"
        #expect(cityHash32(text.utf8.lazy.map { $0 }.reversed().reversed()) == text.cityHash32)
    }

    /// Every length from 0 to 100 runs without reading out of bounds (ASan/fuzz cover the rest)
    /// and distinct lengths give distinct hashes here.
    @Test func everyLengthBranch() {
        let bytes = (0..<100).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let hashes = (0...100).map { cityHash32(bytes.prefix($0)) }
        #expect(Set(hashes).count == hashes.count)
    }
}
