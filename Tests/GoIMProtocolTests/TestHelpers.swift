import NIOCore

/// Bytes from hex text; spaces are ignored so tests can mirror the reference's grouping.
func bytes(hex: String) -> [UInt8] {
    let digits = Array(hex.filter { !$0.isWhitespace })
    precondition(digits.count % 2 == 0, "odd hex length")
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

func buffer(hex: String) -> ByteBuffer {
    ByteBuffer(bytes: bytes(hex: hex))
}

func hex(_ buffer: ByteBuffer) -> String {
    buffer.readableBytesView.map { byte in
        let digits = String(byte, radix: 16)
        return digits.count == 1 ? "0" + digits : digits
    }.joined()
}

/// The JS example client's auth body (reference §8), 82 bytes.
let jsAuthBody = #"{"mid":123, "room_id":"live://1000", "platform":"web", "accepts":[1000,1001,1002]}"#

/// The Go benchmark client's auth body for mid 1 (reference §9.1).
let benchAuthBody = #"{"mid":1,"key":"","room_id":"test://1","platform":"ios","accepts":[1000,1001,1002]}"#

/// A header with arbitrary field values, for malformed-input tests.
func rawHeader(packLen: Int32, headerLen: Int16 = 16, ver: Int16 = 1, op: Int32 = 7, seq: Int32 = 1) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeMultipleIntegers(packLen, headerLen, ver, op, seq)
    return buffer
}
