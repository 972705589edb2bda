/// Comparing secrets (push tokens, the internal RPC secret) without a timing side channel.
public enum ConstantTime {
    /// Whether `a` equals `b`, in time that depends on their lengths only, not on where they first differ.
    public static func equals(_ a: some StringProtocol, _ b: some StringProtocol) -> Bool {
        equals(Array(a.utf8), Array(b.utf8))
    }

    public static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
