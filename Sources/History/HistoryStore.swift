import GoIMConfig
import NIOCore
import Redis

/// Bounded per-stream history in Redis: one Lua script call per message writes it and gives it its offset, one
/// reads a range back. Layout and reasons: docs/history.md.
public struct HistoryStore: Sendable {
    /// The largest offset: it travels in a packet's 32-bit `seq`. Reaching it starts a new epoch.
    public static let maxOffset: UInt64 = UInt64(Int32.max)

    /// One message to append.
    public struct Append: Sendable {
        public var stream: HistoryStream
        /// The queue message's identity (stream sequence and timestamp): a redelivery finds its first offset.
        public var messageID: String
        public var operation: Int32
        public var body: ByteBuffer
        public var limits: HistoryLimits
        /// Start a new epoch (history since the last write may be incomplete: a write failed).
        public var newEpoch: Bool

        public init(
            stream: HistoryStream, messageID: String, operation: Int32, body: ByteBuffer, limits: HistoryLimits,
            newEpoch: Bool = false
        ) {
            self.stream = stream
            self.messageID = messageID
            self.operation = operation
            self.body = body
            self.limits = limits
            self.newEpoch = newEpoch
        }
    }

    let redis: RedisClient

    public init(redis: RedisClient) {
        self.redis = redis
    }

    /// KEYS: meta, log, ids. ARGV: message id, size, ttl (ms), a fresh epoch, operation, body, "1" to start a new
    /// epoch, max offset. Returns {offset, epoch, repeated (0/1)}.
    static let appendScript = """
        local epoch = redis.call('HGET', KEYS[1], 'epoch')
        if epoch and ARGV[7] ~= '1' then
          local known = redis.call('ZSCORE', KEYS[3], ARGV[1])
          if known then return {tonumber(known), epoch, 1} end
        end
        local size = tonumber(ARGV[2])
        if (not epoch) or ARGV[7] == '1' then
          epoch = ARGV[4]
          redis.call('DEL', KEYS[2], KEYS[3])
          redis.call('HSET', KEYS[1], 'epoch', epoch)
        end
        local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
        if offset > tonumber(ARGV[8]) then
          epoch = ARGV[4]
          redis.call('DEL', KEYS[2], KEYS[3])
          redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 1)
          offset = 1
        end
        redis.call('RPUSH', KEYS[2], offset .. ':' .. ARGV[5] .. ':' .. ARGV[6])
        redis.call('LTRIM', KEYS[2], -size, -1)
        redis.call('ZADD', KEYS[3], offset, ARGV[1])
        redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(size + 1))
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call('PEXPIRE', KEYS[2], ARGV[3])
        redis.call('PEXPIRE', KEYS[3], ARGV[3])
        return {offset, epoch, 0}
        """

    /// KEYS: meta, log. ARGV: since, limit, the reader's epoch ("" = any), a fresh epoch and its TTL (ms) to start the
    /// stream with when it has none ("" = don't). Returns {epoch or "", top, first, entries}. A reader of another epoch
    /// reads from the oldest message held.
    static let readScript = """
        local epoch = redis.call('HGET', KEYS[1], 'epoch')
        if not epoch then
          if ARGV[4] == '' then return {'', 0, 1, {}} end
          redis.call('HSET', KEYS[1], 'epoch', ARGV[4], 'offset', 0)
          redis.call('PEXPIRE', KEYS[1], ARGV[5])
          return {ARGV[4], 0, 1, {}}
        end
        local top = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
        local head = redis.call('LINDEX', KEYS[2], 0)
        local first = top + 1
        if head then first = tonumber(string.match(head, '^(%d+):')) end
        local since = tonumber(ARGV[1])
        if ARGV[3] ~= '' and ARGV[3] ~= epoch then since = 0 end
        local start = since + 1 - first
        if start < 0 then start = 0 end
        local limit = tonumber(ARGV[2])
        local entries = {}
        if limit > 0 then entries = redis.call('LRANGE', KEYS[2], start, start + limit - 1) end
        return {epoch, top, first, entries}
        """

    /// Appends each message (one pipeline, one script call each) and returns where each landed, in order. A failed
    /// write is a failure in its place; the others still count.
    public func append(_ messages: [Append]) async -> [Result<HistoryStamp, HistoryError>] {
        guard !messages.isEmpty else { return [] }
        let commands = messages.map { message -> RedisCommand in
            let s = message.stream
            return RedisCommand("EVAL", [
                .string(Self.appendScript), 3, .string(s.metaKey), .string(s.logKey), .string(s.idsKey),
                .string(message.messageID), .integer(Int64(message.limits.size)),
                .integer(max(1, message.limits.ttl.milliseconds)), .string(Self.freshEpoch()),
                .integer(Int64(message.operation)), .bytes(message.body), message.newEpoch ? "1" : "0",
                .integer(Int64(Self.maxOffset)),
            ])
        }
        let replies: [RESPValue]
        do {
            replies = try await redis.pipeline(commands)
        } catch {
            return Array(repeating: .failure(.unavailable("\(error)")), count: messages.count)
        }
        return replies.map { reply in
            if case .error(let message) = reply { return .failure(.unavailable(message)) }
            guard let parts = reply.array, parts.count == 3, let offset = parts[0].int, offset > 0,
                let epoch = parts[1].string, let repeated = parts[2].int
            else { return .failure(.malformedReply("append: \(reply)")) }
            return .success(HistoryStamp(offset: UInt64(offset), epoch: epoch, repeated: repeated == 1))
        }
    }

    /// The messages of `stream` after offset `since` of `epoch` (empty epoch: whatever the current one is), at most
    /// `limit` (0 reads only the stream's position). With `startingWith` a stream without history gets its epoch now
    /// (kept that long), so that a client connecting before the first message learns the epoch the messages will have.
    public func read(
        _ stream: HistoryStream, since: UInt64, epoch: String, limit: Int, startingWith limits: HistoryLimits? = nil
    ) async throws(HistoryError) -> HistoryPage {
        let reply: RESPValue
        do {
            reply = try await redis.send(RedisCommand("EVAL", [
                .string(Self.readScript), 2, .string(stream.metaKey), .string(stream.logKey),
                .integer(Int64(min(since, Self.maxOffset))), .integer(Int64(max(0, limit))), .string(epoch),
                .string(limits == nil ? "" : Self.freshEpoch()), .integer(max(1, limits?.ttl.milliseconds ?? 1)),
            ]))
        } catch {
            throw .unavailable("\(error)")
        }
        guard let parts = reply.array, parts.count == 4, let current = parts[0].string, let top = parts[1].int,
            let first = parts[2].int, let entries = parts[3].array
        else { throw .malformedReply("read: \(reply)") }
        var messages: [HistoryMessage] = []
        messages.reserveCapacity(entries.count)
        for entry in entries {
            guard let bytes = entry.bytes, let message = Self.decode(bytes) else {
                throw .malformedReply("history entry of \(stream)")
            }
            messages.append(message)
        }
        let sameEpoch = !current.isEmpty && (epoch.isEmpty || epoch == current)
        let after = sameEpoch ? since : 0
        // Complete: nothing between `since` and the oldest held is missing, and the page reaches `top`.
        let complete: Bool
        if current.isEmpty {
            complete = epoch.isEmpty && since == 0
        } else {
            complete = sameEpoch && after <= UInt64(top) && after + 1 >= UInt64(first)
                && (messages.last?.offset ?? after) >= (limit > 0 ? UInt64(top) : after)
        }
        return HistoryPage(
            epoch: current, top: UInt64(max(0, top)), first: UInt64(max(0, first)), messages: messages,
            complete: complete)
    }

    /// Parses `<offset>:<operation>:<body>`.
    static func decode(_ entry: ByteBuffer) -> HistoryMessage? {
        let view = entry.readableBytesView
        guard let firstColon = view.firstIndex(of: UInt8(ascii: ":")),
            let secondColon = view[(firstColon + 1)...].firstIndex(of: UInt8(ascii: ":")),
            let offset = UInt64(String(decoding: view[view.startIndex..<firstColon], as: UTF8.self)),
            let operation = Int32(String(decoding: view[(firstColon + 1)..<secondColon], as: UTF8.self))
        else { return nil }
        let bodyStart = secondColon + 1 - view.startIndex
        let body = entry.getSlice(at: entry.readerIndex + bodyStart, length: view.count - bodyStart) ?? ByteBuffer()
        return HistoryMessage(offset: offset, operation: operation, body: body)
    }

    /// 16 hex digits.
    static func freshEpoch() -> String {
        let value = UInt64.random(in: 1...UInt64.max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
