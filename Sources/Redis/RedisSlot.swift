import NIOCore

/// Redis Cluster's key → slot mapping: CRC16-XMODEM of the key (or of its hash tag) modulo 16384.
public enum RedisSlot {
    public static let count = 16384

    /// CRC16-XMODEM (polynomial 0x1021, initial value 0), the variant Redis Cluster uses.
    public static func crc16<Bytes: Sequence>(_ bytes: Bytes) -> UInt16 where Bytes.Element == UInt8 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }

    /// The slot of a key. Only the part between the first `{` and the next `}` is hashed when that part is not
    /// empty (a hash tag), so `{user1000}.following` and `{user1000}.followers` share a slot.
    public static func slot(_ key: [UInt8]) -> Int {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = key[(open + 1)..<close]
        }
        return Int(crc16(hashed) & 0x3FFF)
    }

    public static func slot(_ key: String) -> Int { slot(Array(key.utf8)) }

    public static func slot(_ key: RedisArgument) -> Int {
        switch key {
        case .string(let string): return slot(string)
        case .bytes(let buffer): return slot(Array(buffer.readableBytesView))
        case .integer(let value): return slot(String(value))
        }
    }
}

extension RedisCommand {
    /// The keys this command touches, as Redis Cluster routes it: every argument of the multi-key commands goim
    /// uses, the `numkeys` keys of EVAL/EVALSHA, none for connection and server commands, else the first argument.
    public var keys: [RedisArgument] {
        switch name.uppercased() {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard arguments.count >= 2, let count = Self.integer(arguments[1]), count > 0,
                arguments.count >= 2 + count
            else { return [] }
            return Array(arguments[2..<(2 + count)])
        case "MGET", "DEL", "EXISTS", "UNLINK", "TOUCH", "WATCH":
            return arguments
        case "MSET", "MSETNX":
            return stride(from: 0, to: arguments.count, by: 2).map { arguments[$0] }
        case "PING", "MULTI", "EXEC", "DISCARD", "INFO", "CLUSTER", "ASKING", "AUTH", "SELECT", "SCRIPT", "CONFIG",
            "READONLY", "READWRITE", "FLUSHALL", "FLUSHDB", "DBSIZE", "TIME", "ECHO", "CLIENT", "HELLO", "UNWATCH":
            return []
        default:
            return arguments.isEmpty ? [] : [arguments[0]]
        }
    }

    /// The one slot all keys share; nil when the command has no key or its keys span several slots.
    public var slot: Int? {
        let keys = self.keys
        guard let first = keys.first else { return nil }
        let slot = RedisSlot.slot(first)
        return keys.dropFirst().allSatisfy { RedisSlot.slot($0) == slot } ? slot : nil
    }

    private static func integer(_ argument: RedisArgument) -> Int? {
        switch argument {
        case .integer(let value): return Int(value)
        case .string(let string): return Int(string)
        case .bytes(let buffer): return Int(String(buffer: buffer))
        }
    }
}
