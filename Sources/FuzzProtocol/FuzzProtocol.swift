// libFuzzer harness for GoIMProtocol: every parser that reads client bytes gets the same input.
// Build and run with scripts/fuzz-protocol. A plain `swift build` links this as a harmless no-op.
import GoIMProtocol
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    fuzzTCPStream(input)
    fuzzWebSocket(input)
    fuzzRawBatch(input)
    fuzzAuthBody(input)
    _ = WatchOps.parse(input)
    _ = cityHash32(input.readableBytesView)
    return 0
}

/// Reads packets until more bytes are needed or the stream is rejected; what is read must
/// re-encode to exactly the bytes consumed (a short packLen consumes just the header).
private func fuzzTCPStream(_ input: ByteBuffer) {
    var stream = input
    while true {
        let start = stream.readerIndex
        guard let packet = try? stream.readPacket() else { return }
        let consumed = stream.readerIndex - start
        precondition(consumed == packet.encodedLength && consumed <= PacketLimits.goim.maxPacketLength)
        let packLen = input.getInteger(at: start, as: Int32.self)!
        if packLen >= 16 {
            var encoded = ByteBuffer()
            encoded.writePacket(packet)
            precondition(encoded == input.getSlice(at: start, length: consumed)!)
        }
    }
}

private func fuzzWebSocket(_ input: ByteBuffer) {
    guard let packet = try? WebSocketPacket.decode(input) else { return }
    precondition(packet.encodedLength <= input.readableBytes)
    let strict = try? WebSocketPacket.decode(input, rejectingTrailingBytes: true)
    precondition(strict == nil || strict == packet)
}

/// A batch that splits must re-encode to the same bytes.
private func fuzzRawBatch(_ input: ByteBuffer) {
    guard let packets = try? RawBatch.split(input) else { return }
    precondition(RawBatch.encode(packets) == input)
}

/// Whatever decodes must survive an encode/decode round trip (checks the encoder's escaping).
private func fuzzAuthBody(_ input: ByteBuffer) {
    guard let body = try? AuthBody.decode(input) else { return }
    precondition((try? AuthBody.decode(body.encoded())) == body)
}
