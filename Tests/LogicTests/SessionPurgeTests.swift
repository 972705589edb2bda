import Foundation
import GRPCCore
import NIOCore
import NIOPosix
import GoIMRPC
import Redis
import TestSupport
import Testing

@testable import Logic

/// `srv_<server>`: the sessions each comet holds, so that a comet that died without deregistering loses its
/// sessions once it has been gone from the registry for `registry.ttl` (goim kept them until `redis.expire`).
@Suite("sessions of comets that died", .startsServers)
struct SessionPurgeTests {
    /// A gRPC address nothing listens on (port 1 refuses at once): a dead comet's.
    static let closedPort = "127.0.0.1:1"

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
            await refresher.purgeGone(&watch, live: [a: Self.closedPort, b: Self.closedPort], now: start)
            // a dies: its record is gone (expired). Missing for less than the TTL: nothing happens yet.
            try await h.registry.deregister(hostname: a)
            await refresher.purgeGone(&watch, live: [b: Self.closedPort], now: start + .seconds(1))
            #expect(try await h.command("EXISTS", "key_ka").int == 1)
            await refresher.purgeGone(&watch, live: [b: Self.closedPort], now: start + .seconds(3))
            #expect(try await h.command("EXISTS", "key_ka", "key_guest-a", "srv_\(a)").int == 0)
            #expect(try await h.command("HGETALL", "mid_1").array?.compactMap(\.string) == ["kb", b])
            #expect(try await h.command("GET", "key_kb").string == b)
            #expect(watch.known == [b: Self.closedPort])

            // b goes missing for the TTL, but its record is back by the time of the purge (it re-registered after
            // Redis lost the registry, say): its sessions stay.
            await refresher.purgeGone(&watch, live: [:], now: start + .seconds(4))
            await refresher.purgeGone(&watch, live: [:], now: start + .seconds(7))
            #expect(try await h.command("GET", "key_kb").string == b)
            #expect(try await Self.members(h, b) == ["1:kb"])
        }
    }

    @Test("a comet missing from the registry whose gRPC port still accepts connections keeps its sessions; once the port closes they go")
    func aliveCometKeepsSessions() async throws {
        try await LogicHarness.run({ $0.registry.ttl = .seconds(2) }) { h in
            let a = h.comet("a")
            try await h.withLogicClient { client in
                _ = try await client.connect(RPCTests.connectRequest(server: a, #"{"mid":7,"key":"ka7"}"#))
            }
            // Stands for comet a's gRPC port: accepts connections, as a live comet's does.
            let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: "127.0.0.1", port: 0).get()
            let port = try #require(listener.localAddress?.port)
            let address = "127.0.0.1:\(port)"
            let refresher = h.server.refresher
            var watch = OnlineRefresher.Watch()
            let start = ContinuousClock.now
            await refresher.purgeGone(&watch, live: [a: address], now: start)
            // The registry loses a (Redis restarted, or its writes time out) for longer than the TTL: it still answers.
            await refresher.purgeGone(&watch, live: [:], now: start + .seconds(1))
            await refresher.purgeGone(&watch, live: [:], now: start + .seconds(3))
            #expect(try await h.command("GET", "key_ka7").string == a)
            #expect(watch.keptAlive == [a])
            // Checked again only after another TTL, then purged once its port is closed (it died after all).
            try await listener.close()
            await refresher.purgeGone(&watch, live: [:], now: start + .seconds(4))
            #expect(try await h.command("GET", "key_ka7").string == a)
            await refresher.purgeGone(&watch, live: [:], now: start + .seconds(6))
            #expect(try await h.command("EXISTS", "key_ka7").int == 0)
            #expect(watch.known.isEmpty && watch.keptAlive.isEmpty)
        }
    }
}
