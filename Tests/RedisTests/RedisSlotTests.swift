import Redis
import Testing

@Suite struct RedisSlotTests {
    @Test func crc16IsXModem() {
        #expect(RedisSlot.crc16(Array("123456789".utf8)) == 0x31C3)
    }

    @Test func slotsMatchRedis() {
        // Values from CLUSTER KEYSLOT.
        #expect(RedisSlot.slot("foo") == 12182)
        #expect(RedisSlot.slot("bar") == 5061)
        #expect(RedisSlot.slot("{user1000}.following") == RedisSlot.slot("{user1000}.followers"))
        #expect(RedisSlot.slot("{user1000}.following") == RedisSlot.slot("user1000"))
        // An empty tag hashes the whole key; only the first `{…}` counts.
        #expect(RedisSlot.slot("foo{}{bar}") == Int(RedisSlot.crc16(Array("foo{}{bar}".utf8)) & 0x3FFF))
        #expect(RedisSlot.slot("foo{{bar}}zap") == RedisSlot.slot("{bar"))
        #expect(RedisSlot.slot("foo{bar}{zap}") == RedisSlot.slot("bar"))
    }

    @Test func commandKeys() {
        let eval = RedisCommand("EVAL", ["return 1", 2, "hist:{room:1}:meta", "hist:{room:1}:log", "arg"])
        #expect(eval.keys == ["hist:{room:1}:meta", "hist:{room:1}:log"])
        #expect(eval.slot == RedisSlot.slot("room:1"))
        #expect(RedisCommand("MGET", ["a", "b"]).keys == ["a", "b"])
        #expect(RedisCommand("MGET", ["foo", "bar"]).slot == nil)
        #expect(RedisCommand("HSET", ["mid_1", "k", "s"]).keys == ["mid_1"])
        #expect(RedisCommand("PING").keys.isEmpty)
        #expect(RedisCommand("EVAL", ["return 1", 0]).keys.isEmpty)
    }
}
