import GoIMProtocol
import GoIMRPC
import NIOCore

/// The two ways a connection frames outbound bytes.
enum TransportKind: UInt8, Sendable, CustomStringConvertible {
    /// goim packets back to back on the stream.
    case tcp
    /// Each goim packet (or op 9 envelope) in one unmasked binary WebSocket frame (plain or over TLS).
    case webSocket

    var description: String { self == .tcp ? "tcp" : "websocket" }
}

/// Outbound encoding. Everything a connection writes is a ready-made `ByteBuffer`: TCP gets packet bytes, WebSocket
/// gets complete frames. Server frames are unmasked, so one frame's bytes serve every WebSocket recipient.
enum Wire {
    /// FIN + binary opcode.
    static let binaryFrameByte: UInt8 = 0x82

    /// Bytes of a server (unmasked) frame header for a payload of `length` bytes.
    static func frameHeaderLength(payload length: Int) -> Int {
        length < 126 ? 2 : (length <= 0xFFFF ? 4 : 10)
    }

    /// Appends an unmasked frame header with FIN set (`firstByte` = FIN | opcode).
    static func writeFrameHeader(firstByte: UInt8 = binaryFrameByte, payload length: Int, to buffer: inout ByteBuffer) {
        if length < 126 {
            buffer.writeMultipleIntegers(firstByte, UInt8(length))
        } else if length <= 0xFFFF {
            buffer.writeMultipleIntegers(firstByte, UInt8(126), UInt16(length))
        } else {
            buffer.writeMultipleIntegers(firstByte, UInt8(127), UInt64(length))
        }
    }

    /// One packet for `transport`: TCP = the packet, WebSocket = one binary frame holding it.
    static func packet(
        operation: Operation, version: Int16, sequence: Int32, body: ByteBuffer?, transport: TransportKind,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let bodyLength = body?.readableBytes ?? 0
        let packetLength = PacketHeader.length + bodyLength
        var buffer: ByteBuffer
        switch transport {
        case .tcp:
            buffer = allocator.buffer(capacity: packetLength)
        case .webSocket:
            buffer = allocator.buffer(capacity: frameHeaderLength(payload: packetLength) + packetLength)
            writeFrameHeader(payload: packetLength, to: &buffer)
        }
        buffer.writePacketHeader(operation: operation, version: version, sequence: sequence, bodyLength: bodyLength)
        if let body { buffer.writeImmutableBuffer(body) }
        return buffer
    }

    /// The op 3 reply: a 4-byte big-endian online count, `ver`/`seq` echoed.
    static func heartbeatReply(online: Int32, version: Int16, sequence: Int32, transport: TransportKind, allocator: ByteBufferAllocator)
        -> ByteBuffer
    {
        let packetLength = PacketHeader.length + HeartbeatReply.bodyLength
        var buffer = allocator.buffer(capacity: packetLength + 2)
        if transport == .webSocket { writeFrameHeader(payload: packetLength, to: &buffer) }
        HeartbeatReply.write(online: online, version: version, sequence: sequence, to: &buffer)
        return buffer
    }
}

/// A pushed message encoded once per transport; the same buffers are written to every recipient (CoW, no copies).
struct Push: Sendable {
    /// TCP bytes: for an op 9 envelope only its body (the inner packets), else one packet (reference §2.8).
    var tcp: ByteBuffer
    /// One complete WebSocket frame holding the packet (op 9 keeps its 16-byte outer header).
    var webSocket: ByteBuffer

    init(proto: Goim_Protocol_Proto, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        let body = proto.body
        let operation = Operation(proto.op)
        let version = Int16(truncatingIfNeeded: proto.ver)
        let packetLength = PacketHeader.length + body.count
        var frame = allocator.buffer(capacity: Wire.frameHeaderLength(payload: packetLength) + packetLength)
        Wire.writeFrameHeader(payload: packetLength, to: &frame)
        let packetStart = frame.writerIndex
        frame.writePacketHeader(operation: operation, version: version, sequence: proto.seq, bodyLength: body.count)
        frame.writeBytes(body)
        self.webSocket = frame
        // TCP reuses the frame's storage: a slice is no copy.
        if operation == .raw {
            self.tcp = frame.getSlice(at: packetStart + PacketHeader.length, length: body.count)!
        } else {
            self.tcp = frame.getSlice(at: packetStart, length: packetLength)!
        }
    }

    /// An op 9 envelope (ver 1, seq 0, as job builds them) around `body`, a run of complete inner packets.
    init(rawBody body: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        let packetLength = PacketHeader.length + body.readableBytes
        var frame = allocator.buffer(capacity: Wire.frameHeaderLength(payload: packetLength) + packetLength)
        Wire.writeFrameHeader(payload: packetLength, to: &frame)
        let packetStart = frame.writerIndex
        frame.writePacketHeader(operation: .raw, version: 1, sequence: 0, bodyLength: body.readableBytes)
        frame.writeImmutableBuffer(body)
        self.webSocket = frame
        self.tcp = frame.getSlice(at: packetStart + PacketHeader.length, length: body.readableBytes)!
    }

    /// The same bytes in new storage. Each event loop gets its own copy of a broadcast, so the reference count that
    /// every write retains and releases is only ever touched by one thread (no cache-line ping-pong between cores).
    func copy(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> Push {
        var frame = allocator.buffer(capacity: webSocket.readableBytes)
        frame.writeImmutableBuffer(webSocket)
        let tcpOffset = webSocket.readableBytes - tcp.readableBytes
        return Push(webSocket: frame, tcp: frame.getSlice(at: frame.readerIndex + tcpOffset, length: tcp.readableBytes)!)
    }

    private init(webSocket: ByteBuffer, tcp: ByteBuffer) {
        self.webSocket = webSocket
        self.tcp = tcp
    }

    func bytes(for transport: TransportKind) -> ByteBuffer {
        transport == .tcp ? tcp : webSocket
    }
}

/// A run of room messages with offsets, encoded once per transport in both forms: `withOffsets` for clients that
/// opted in (each inner `seq` is the message's offset), `plain` for goim's clients (every inner `seq` 0: goim's bytes).
struct StreamPush: Sendable {
    var epoch: String
    var first: UInt64
    var last: UInt64
    var withOffsets: Push
    var plain: Push
    /// The operation of a user stream's message (one message per push; watch sets filter them). 0 for room runs.
    var operation: Int32 = 0

    init(run: OffsetRun, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        epoch = run.epoch
        first = run.first
        last = run.last
        withOffsets = Push(rawBody: run.body, allocator: allocator)
        plain = Push(rawBody: OffsetPackets.zeroingSequences(run.body), allocator: allocator)
    }

    /// One message of a user stream: to clients that opted in, its offset travels as `-offset` in `seq` (a room's
    /// offsets are positive, so the client tells the two streams apart); goim's clients get `seq` 0.
    init(userMessage run: OffsetRun, operation: Int32, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        epoch = run.epoch
        first = run.first
        last = run.last
        self.operation = operation
        withOffsets = Push(rawBody: OffsetPackets.negatingSequences(run.body), allocator: allocator)
        plain = Push(rawBody: OffsetPackets.zeroingSequences(run.body), allocator: allocator)
    }

    func copy() -> StreamPush {
        var copy = self
        copy.withOffsets = withOffsets.copy()
        copy.plain = plain.copy()
        return copy
    }

    /// The packets after offset `offset` only (a recovering client already has the others); nil when none is.
    func after(_ offset: UInt64) -> Push? {
        guard last > offset else { return nil }
        guard first <= offset else { return withOffsets }
        guard let items = OffsetPackets.split(withOffsets.tcp) else { return withOffsets }
        var body = ByteBuffer()
        for item in items where item.offset > offset { body.writeImmutableBuffer(item.bytes) }
        return Push(rawBody: body)
    }
}
