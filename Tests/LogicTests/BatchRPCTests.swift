import Foundation
import GRPCCore
import GoIMRPC
import Redis
import Testing

@testable import Logic

/// `swiftgoim.logic.LogicBatch`: many Connects / Disconnects in one call, each answered as its single call would be.
@Suite("gRPC swiftgoim.logic.LogicBatch", .startsServers)
struct BatchRPCTests {
    @Test("ConnectBatch answers each request in order, refuses only the bad ones and stores every accepted session")
    func connectBatch() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            var batch = Swiftgoim_Logic_ConnectBatchReq()
            batch.requests = [
                RPCTests.connectRequest(server: a, #"{"mid":1,"key":"k1","room_id":"live://1","accepts":[1000]}"#),
                RPCTests.connectRequest(server: a, #"{"mid":"2"}"#),  // goim's body has a numeric mid
                RPCTests.connectRequest(server: a, #"{"mid":3,"room_id":"live://3"}"#),
                RPCTests.connectRequest(server: "", #"{"mid":4,"key":"k4"}"#),
            ]
            let reply = try await h.withBatchClient { try await $0.connectBatch(batch) }
            try #require(reply.results.count == 4)

            let first = reply.results[0]
            #expect(first.status.code == 0)
            #expect(first.reply.mid == 1 && first.reply.key == "k1" && first.reply.roomID == "live://1")
            #expect(first.reply.accepts == [1000])
            #expect(first.reply.heartbeat == 480_000_000_000)

            #expect(reply.results[1].status.code == Int32(RPCError.Code.unauthenticated.rawValue))
            #expect(reply.results[1].status.message.hasPrefix(#"authentication failed: invalid auth body: field "mid""#))

            let third = reply.results[2]
            #expect(third.status.code == 0)
            #expect(third.reply.key.count == 36, "a generated key, as the single Connect makes")

            #expect(reply.results[3].status.code == Int32(RPCError.Code.invalidArgument.rawValue))

            #expect(try await h.command("GET", "key_k1").string == a)
            #expect(try await h.command("HGET", "mid_1", "k1").string == a)
            #expect(try await h.command("GET", "key_\(third.reply.key)").string == a)
            #expect(try await h.command("HGET", "mid_3", third.reply.key).string == a)
            #expect(try await h.command("EXISTS", "key_k4").int == 0)
            let ttl = try #require(try await h.command("TTL", "mid_3").int)
            #expect((1795...1800).contains(ttl))
        }
    }

    @Test("DisconnectBatch removes each session that still names the calling comet, in request order")
    func disconnectBatch() async throws {
        try await LogicHarness.run { h in
            let (a, b) = (h.comet("a"), h.comet("b"))
            try await h.withLogicClient { client in
                _ = try await client.connect(RPCTests.connectRequest(server: a, #"{"mid":7,"key":"x"}"#))
                _ = try await client.connect(RPCTests.connectRequest(server: b, #"{"mid":7,"key":"y"}"#))
            }
            func request(_ mid: Int64, _ key: String, _ server: String) -> Goim_Logic_DisconnectReq {
                var request = Goim_Logic_DisconnectReq()
                request.mid = mid
                request.key = key
                request.server = server
                return request
            }
            var batch = Swiftgoim_Logic_DisconnectBatchReq()
            // x is a's, y is b's (a must not remove it, goim bug 1), z is unknown.
            batch.requests = [request(7, "x", a), request(7, "y", a), request(7, "z", a)]
            let reply = try await h.withBatchClient { try await $0.disconnectBatch(batch) }
            #expect(reply.results.map(\.status.code) == [0, 0, 0])
            #expect(reply.results.map(\.reply.has) == [true, false, false])
            #expect(try await h.command("EXISTS", "key_x").int == 0)
            #expect(try await h.command("HEXISTS", "mid_7", "x").int == 0)
            #expect(try await h.command("GET", "key_y").string == b)
            #expect(try await h.command("HGET", "mid_7", "y").string == b)
        }
    }

    @Test("A batch larger than the limit is refused whole with a clear message")
    func oversizedBatch() async throws {
        try await LogicHarness.run { h in
            var batch = Swiftgoim_Logic_DisconnectBatchReq()
            batch.requests = Array(repeating: Goim_Logic_DisconnectReq(), count: LogicBatchRPCService.maxItems + 1)
            let error = await #expect(throws: RPCError.self) {
                _ = try await h.withBatchClient { try await $0.disconnectBatch(batch) }
            }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message == "batch of \(LogicBatchRPCService.maxItems + 1) calls, at most \(LogicBatchRPCService.maxItems) allowed")
        }
    }

    @Test("Redis down: every item of a ConnectBatch is still accepted (as goim's Connect), DisconnectBatch items say unavailable")
    func redisDown() async throws {
        try await LogicHarness.run { h in
            await h.redisServer.stop()
            var connects = Swiftgoim_Logic_ConnectBatchReq()
            connects.requests = [
                RPCTests.connectRequest(server: h.comet("a"), #"{"mid":1,"key":"k1"}"#),
                RPCTests.connectRequest(server: h.comet("a"), #"{"mid":2,"key":"k2"}"#),
            ]
            let reply = try await h.withBatchClient { try await $0.connectBatch(connects) }
            #expect(reply.results.map(\.status.code) == [0, 0])
            #expect(reply.results.map(\.reply.key) == ["k1", "k2"])

            var disconnects = Swiftgoim_Logic_DisconnectBatchReq()
            var one = Goim_Logic_DisconnectReq()
            one.mid = 1
            one.key = "k1"
            one.server = h.comet("a")
            disconnects.requests = [one, one]
            let replies = try await h.withBatchClient { try await $0.disconnectBatch(disconnects) }
            #expect(replies.results.map(\.status.code) == Array(repeating: Int32(RPCError.Code.unavailable.rawValue), count: 2))
        }
    }
}
