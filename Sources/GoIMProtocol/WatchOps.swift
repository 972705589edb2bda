import NIOCore

/// The body of Sub (op 14) and Unsub (op 16): decimal int32 operations joined by `,`, e.g. `1000,1001`.
public enum WatchOps {
    /// The operations in `body`, or nil if any item is not a decimal int32 (goim then changes
    /// nothing). Like Go's `strconv.ParseInt`: an optional `+`/`-` sign, no spaces, no empty items.
    /// An empty body is an empty list.
    public static func parse(_ body: ByteBuffer) -> [Int32]? {
        let bytes = body.readableBytesView
        if bytes.isEmpty { return [] }
        var ops: [Int32] = []
        for item in bytes.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            guard let op = Int32(String(decoding: item, as: UTF8.self), radix: 10) else { return nil }
            ops.append(op)
        }
        return ops
    }

    /// The body for `ops`, as a client would send it.
    public static func body(_ ops: some Sequence<Int32>) -> ByteBuffer {
        ByteBuffer(string: ops.map(String.init).joined(separator: ","))
    }
}
