import Foundation
import GRPCCore
import GoIMRPC
import Redis
import TestSupport
import Testing

@testable import Logic

/// `srv_<server>`: the sessions each comet holds, so that a comet that died without deregistering loses its
/// sessions once it has been gone from the registry for `registry.ttl` (goim kept them until `redis.expire`).
@Suite("sessions of comets that died", .startsServers)
struct SessionPurgeTests {
    static func members(_ h: LogicHarness, _ server: String) async throws -> Set<String> {
        Set(try await h.command("SMEMBERS", "srv_\(server)").array?.compactMap(\.string) ?? [])
    }

    @Test("Connect, Heartbeat and Disconnect keep srv_<server> in step with the sessions, with redis.expire")
    func indexFollowsSessions() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            try await h.withLogicClient { client in
                _ = try await client.connect(RPCTests.connectRequest(server: a, #"{"mid":1,"key":"ka"}"#))
                _ = try await client.connect(RPCTests.connectRequest(server: a, #"{"key":"guest"}"#))
                #expect(try await Self.members(h, a) == ["1:ka", "0:guest"])
                let ttl = try #require(try await h.command("TTL", "srv_\(a)").int)
                #expect((1795...1800).contains(ttl))

                var disconnect = Goim_Logic_DisconnectReq()
                (disconnect.mid, disconnect.key, disconnect.server) = (0, "guest", a)
                _ = try await client.disconnect(disconnect)
                #expect(try await Self.members(h, a) == ["1:ka"])

                // A heartbeat re-creates what was lost.
                _ = try await h.command("DEL", "srv_\(a)")
                var heartbeat = Goim_Logic_HeartbeatReq()
                (heartbeat.mid, heartbeat.key, heartbeat.server) = (1, "ka", a)
                _ = try await client.heartbeat(heartbeat)
                #expect(try await Self.members(h, a) == ["1:ka"])
            }
        }
    }

    @Test("a comet missing from the registry for registry.ttl has its sessions removed, and only its own; one that came back keeps them")
    func purgeAfterTTL() async throws {
        try await LogicHarness.run({ $0.registry.ttl = .seconds(2) }) { h in
            let (a, b) = (h.comet("a"), h.comet("b"))
            try await h.withLogicClient { client in
                for (json, server) in [(#"{"mid":1,"key":"ka"}"#, a), (#"{"mid":1,"key":"kb"}"#, b), (#"{"key":"guest-a"}"#, a)] {
                    _ = try await client.connect(RPCTests.connectRequest(server: server, json))
                }
            }
            try await h.register(a)
            try await h.register(b)
            let refresher = h.server.refresher
            var watch = OnlineRefresher.Watch()
            let start = ContinuousClock.now
            await refresher.purgeGone(&watch, live: [a, b], now: start)
            // a dies: its record is gone (expired). Missing for less than the TTL: nothing happens yet.
            try await h.registry.deregister(hostname: a)
            await refresher.purgeGone(&watch, live: [b], now: start + .seconds(1))
            #expect(try await h.command("EXISTS", "key_ka").int == 1)
            await refresher.purgeGone(&watch, live: [b], now: start + .seconds(3))
            #expect(try await h.command("EXISTS", "key_ka", "key_guest-a", "srv_\(a)").int == 0)
            #expect(try await h.command("HGETALL", "mid_1").array?.compactMap(\.string) == ["kb", b])
            #expect(try await h.command("GET", "key_kb").string == b)
            #expect(watch.known == [b])

            // b goes missing for the TTL, but its record is back by the time of the purge (it re-registered after
            // Redis lost the registry, say): its sessions stay.
            await refresher.purgeGone(&watch, live: [], now: start + .seconds(4))
            await refresher.purgeGone(&watch, live: [], now: start + .seconds(7))
            #expect(try await h.command("GET", "key_kb").string == b)
            #expect(try await Self.members(h, b) == ["1:kb"])
        }
    }
}
