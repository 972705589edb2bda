import Testing

@testable import Comet

@Suite("WatchSet: small inline, hashed when large")
struct WatchSetTests {
    @Test("insert, duplicates, remove and contains agree with Set, across the switch to hashing")
    func agreesWithSet() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var watch = WatchSet([1000, 1001])
            var model: Set<Int32> = [1000, 1001]
            for _ in 0..<40 {
                let ops = (0..<Int.random(in: 0...6, using: &generator)).map { _ in Int32.random(in: 0...20, using: &generator) }
                if Bool.random(using: &generator) {
                    watch.insert(contentsOf: ops)
                    model.formUnion(ops)
                } else {
                    watch.remove(contentsOf: ops)
                    model.subtract(ops)
                }
                #expect(watch.count == model.count)
                #expect(Set(watch.elements) == model)
                for op in Int32(0)...21 { #expect(watch.contains(op) == model.contains(op)) }
            }
        }
    }
}
