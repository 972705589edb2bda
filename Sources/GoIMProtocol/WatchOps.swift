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
        ops.reserveCapacity(bytes.count / 5 + 1)
        // Digits are read in place (no String per item): a client may send thousands of 4 kB Sub bodies.
        var value: Int64 = 0
        var negative = false
        var digits = 0
        var signAllowed = true
        for byte in bytes {
            switch byte {
            case UInt8(ascii: ","):
                guard digits > 0 else { return nil }
                ops.append(Int32(negative ? -value : value))
                (value, negative, digits, signAllowed) = (0, false, 0, true)
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                guard signAllowed else { return nil }
                negative = byte == UInt8(ascii: "-")
                signAllowed = false
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                value = value * 10 + Int64(byte - UInt8(ascii: "0"))
                digits += 1
                signAllowed = false
                guard value <= (negative ? -Int64(Int32.min) : Int64(Int32.max)) else { return nil }
            default:
                return nil
            }
        }
        guard digits > 0 else { return nil }
        ops.append(Int32(negative ? -value : value))
        return ops
    }

    /// The body for `ops`, as a client would send it.
    public static func body(_ ops: some Sequence<Int32>) -> ByteBuffer {
        ByteBuffer(string: ops.map(String.init).joined(separator: ","))
    }
}
