import NIOCore

/// Bench message bodies carry their send time: 8 bytes big-endian wall-clock nanoseconds, then padding up
/// to the requested size (at least 8 bytes). Receivers compute latency from it.
enum Stamp {
    static func body(size: Int, at time: UInt64 = wallNanoseconds()) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: max(8, size))
        for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: time >> (56 - 8 * UInt64(i))) }
        return bytes
    }

    /// Latency in microseconds of a received body, or nil when it carries no stamp.
    static func latencyMicros(_ body: ByteBuffer, now: UInt64 = wallNanoseconds()) -> UInt64? {
        guard let sent = body.getInteger(at: body.readerIndex, endianness: .big, as: UInt64.self),
              sent > 1_500_000_000_000_000_000, sent <= now + 1_000_000_000 else { return nil }
        return now > sent ? (now - sent) / 1000 : 0
    }
}
