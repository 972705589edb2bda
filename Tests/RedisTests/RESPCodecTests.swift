import NIOCore
import Testing

@testable import Redis

@Suite("RESP codec (hiredis), no server")
struct RESPCodecTests {
    private func encode(_ command: RedisCommand) throws -> String {
        var buffer = ByteBuffer()
        try RESPEncoder.encode(command, into: &buffer)
        return String(buffer: buffer)
    }

    private func decodeAll(_ bytes: [UInt8], chunk: Int = .max) throws -> [RESPValue] {
        let reader = RESPReader()
        var values: [RESPValue] = []
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + chunk)
            try reader.feed(ByteBuffer(bytes: bytes[start..<end]))
            while let value = try reader.next() { values.append(value) }
            start = end
        }
        return values
    }

    @Test func encodesNameAndArgumentsWithLengths() throws {
        #expect(try encode(RedisCommand("PING")) == "*1\r\n$4\r\nPING\r\n")
        #expect(try encode(RedisCommand("SET", ["k", .integer(-42)])) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n-42\r\n")
        #expect(
            try encode(RedisCommand("CONFIG", "GET", "maxmemory"))
                == "*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$9\r\nmaxmemory\r\n")
        #expect(try encode(RedisCommand("SET", ["", ""])) == "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n")
    }

    @Test func encodesBinaryArgumentsExactly() throws {
        let value: [UInt8] = [0x00, 0xFF, 0x0D, 0x0A, 0x00, 0x41]
        var buffer = ByteBuffer()
        try RESPEncoder.encode(RedisCommand("SET", ["k", .bytes(ByteBuffer(bytes: value))]), into: &buffer)
        let expected = Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\n".utf8) + value + Array("\r\n".utf8)
        #expect(Array(buffer.readableBytesView) == expected)
    }

    @Test func decodesEveryReplyType() throws {
        let input = "+OK\r\n-ERR bad thing\r\n:-7\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
            + "*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n*1\r\n*0\r\n"
        let values = try decodeAll(Array(input.utf8))
        #expect(values == [
            .simpleString("OK"),
            .error("ERR bad thing"),
            .integer(-7),
            .bulkString(ByteBuffer(string: "hello")),
            .bulkString(ByteBuffer()),
            .null,
            .null,
            .array([]),
            .array([.integer(1), .array([.bulkString(ByteBuffer(string: "a")), .null]), .array([.array([])])]),
        ])
    }

    @Test func decodesBinaryBulkStrings() throws {
        let payload: [UInt8] = [0x00, 0xFF, 0x0D, 0x0A, 0x80]
        let values = try decodeAll(Array("$5\r\n".utf8) + payload + Array("\r\n".utf8))
        #expect(values == [.bulkString(ByteBuffer(bytes: payload))])
    }

    @Test(arguments: [1, 2, 3, 7])
    func decodesRepliesSplitAcrossReads(chunk: Int) throws {
        let input = "+PONG\r\n*2\r\n$3\r\nfoo\r\n:12345\r\n$-1\r\n-WRONGTYPE no\r\n"
        let values = try decodeAll(Array(input.utf8), chunk: chunk)
        #expect(values == [
            .simpleString("PONG"),
            .array([.bulkString(ByteBuffer(string: "foo")), .integer(12345)]),
            .null,
            .error("WRONGTYPE no"),
        ])
    }

    @Test func partialReplyYieldsNothingYet() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "$10\r\nhello"))
        #expect(try reader.next() == nil)
        try reader.feed(ByteBuffer(string: "world\r\n"))
        #expect(try reader.next() == .bulkString(ByteBuffer(string: "helloworld")))
        #expect(try reader.next() == nil)
    }

    @Test func rejectsBytesThatAreNotRESP() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "!oops\r\n"))
        #expect {
            _ = try reader.next()
        } throws: { error in
            guard case RedisError.protocolError(let message) = error else { return false }
            return message.contains("Protocol error")
        }
    }

    @Test func conveniences() {
        let bulk = RESPValue.bulkString(ByteBuffer(string: "42"))
        #expect(bulk.string == "42")
        #expect(bulk.int == 42)
        #expect(bulk.bytes == ByteBuffer(string: "42"))
        #expect(RESPValue.simpleString("OK").string == "OK")
        #expect(RESPValue.integer(7).int == 7)
        #expect(RESPValue.integer(7).string == nil)
        #expect(RESPValue.null.isNull)
        #expect(!RESPValue.bulkString(ByteBuffer()).isNull)
        #expect(RESPValue.array([.null]).array == [.null])
        #expect(RESPValue.error("ERR x").string == nil)
    }
}
