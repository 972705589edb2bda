import CHiredis
import NIOCore

/// Encodes commands with hiredis's formatter. Arguments are passed with explicit lengths, so any bytes are safe.
enum RESPEncoder {
    static func encode(_ command: RedisCommand, into buffer: inout ByteBuffer) throws(RedisError) {
        // hiredis wants a pointer per argument: lay them all out in one contiguous array first.
        var bytes: [UInt8] = []
        var lengths: [Int] = []
        lengths.reserveCapacity(command.arguments.count + 1)
        func append<S: Collection<UInt8>>(_ part: S) {
            bytes.append(contentsOf: part)
            lengths.append(part.count)
        }
        append(command.name.utf8)
        for argument in command.arguments {
            switch argument {
            case .string(let string): append(string.utf8)
            case .bytes(let buffer): append(buffer.readableBytesView)
            case .integer(let integer): append(String(integer).utf8)
            }
        }
        bytes.append(0)  // never empty, so the base address below is never nil

        let written = bytes.withUnsafeBufferPointer { raw -> Bool in
            raw.withMemoryRebound(to: CChar.self) { chars -> Bool in
                var argv: [UnsafePointer<CChar>?] = []
                argv.reserveCapacity(lengths.count)
                var offset = 0
                for length in lengths {
                    argv.append(chars.baseAddress! + offset)
                    offset += length
                }
                var target: UnsafeMutablePointer<CChar>?
                let count = redisFormatCommandArgv(&target, Int32(lengths.count), &argv, lengths)
                guard count >= 0, let target else { return false }
                defer { redisFreeCommand(target) }
                buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(count)))
                return true
            }
        }
        guard written else { throw .protocolError("hiredis could not format \(command.name)") }
    }
}

/// Decodes replies with a hiredis reader. Owns the C reader and frees it in `deinit`.
/// Not thread-safe: each instance belongs to one channel handler and is used on its event loop only.
final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>

    init() {
        guard let reader = redisReaderCreate() else { fatalError("redisReaderCreate: out of memory") }
        self.reader = reader
    }

    deinit { redisReaderFree(reader) }

    /// Hands bytes to the reader; it keeps what does not yet form a whole reply.
    func feed(_ buffer: ByteBuffer) throws(RedisError) {
        let status = buffer.withUnsafeReadableBytes { raw -> Int32 in
            guard let base = raw.baseAddress, raw.count > 0 else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), raw.count)
        }
        if status != REDIS_OK { throw .protocolError(errorMessage) }
    }

    /// The next complete reply, or nil when more bytes are needed.
    func next() throws(RedisError) -> RESPValue? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else { throw .protocolError(errorMessage) }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.convert(reply.assumingMemoryBound(to: redisReply.self))
    }

    private var errorMessage: String {
        withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// Copies a hiredis reply tree into a Swift value (the tree is freed by the caller).
    static func convert(_ reply: UnsafePointer<redisReply>) -> RESPValue {
        let reply = reply.pointee
        let bytes = UnsafeRawBufferPointer(start: reply.str, count: reply.str == nil ? 0 : reply.len)
        switch reply.type {
        case REDIS_REPLY_STRING: return .bulkString(ByteBuffer(bytes: bytes))
        case REDIS_REPLY_STATUS: return .simpleString(String(decoding: bytes, as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: bytes, as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_ARRAY:
            return .array((0..<reply.elements).map { convert(reply.element[$0]!) })
        default: return .null  // REDIS_REPLY_NIL
        }
    }
}
