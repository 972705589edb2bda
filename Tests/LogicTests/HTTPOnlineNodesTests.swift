import Foundation
import GoIMRPC
import Testing

@testable import Logic

/// `/goim/online/*`, `/goim/nodes/*` and `/health` against real Redis and NATS.
@Suite("HTTP online and nodes API", .startsServers)
struct HTTPOnlineNodesTests {
    @Test("online/top matches <type>:// exactly, sorts by count and cuts to limit; bad limits are -400 (bug 26)")
    func onlineTop() async throws {
        try await LogicHarness.run { h in
            let (a, b) = (h.comet("a"), h.comet("b"))
            try await h.register(a)
            try await h.register(b)
            _ = try await h.server.core.renewOnline(server: a, roomCount: ["live://1000": 3, "live://2000": 1, "live2://9": 50])
            _ = try await h.server.core.renewOnline(server: b, roomCount: ["live://1000": 2, "live://3000": 4, "test://1": 7])
            try await h.server.refresher.refreshNow()

            var reply = try await h.get("/goim/online/top?type=live&limit=2")
            #expect(reply.status == 200)
            #expect(reply.body == #"{"code":0,"message":"","data":[{"room_id":"1000","count":5},{"room_id":"3000","count":4}]}"#)
            reply = try await h.get("/goim/online/top?type=live&limit=10")
            #expect(
                reply.body
                    == #"{"code":0,"message":"","data":[{"room_id":"1000","count":5},{"room_id":"3000","count":4},{"room_id":"2000","count":1}]}"#
            )
            reply = try await h.get("/goim/online/top?type=none&limit=10")
            #expect(reply.body == #"{"code":0,"message":"","data":[]}"#)

            reply = try await h.get("/goim/online/top?type=live&limit=-1")
            #expect(reply.status == 400)
            #expect(reply.body == #"{"code":-400,"message":"limit: must be a positive integer"}"#)
            reply = try await h.get("/goim/online/top?type=live")
            #expect(reply.body == #"{"code":-400,"message":"limit: required parameter is missing"}"#)
            reply = try await h.get("/goim/online/top?limit=3")
            #expect(reply.body == #"{"code":-400,"message":"type: required parameter is missing or empty"}"#)
        }
    }

    @Test("online/room answers every asked room, 0 when unknown; repeated or comma-separated rooms")
    func onlineRoom() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            try await h.register(a)
            _ = try await h.server.core.renewOnline(server: a, roomCount: ["live://1000": 3])
            try await h.server.refresher.refreshNow()
            var reply = try await h.get("/goim/online/room?type=live&rooms=1000&rooms=2000")
            #expect(reply.body == #"{"code":0,"message":"","data":{"1000":3,"2000":0}}"#)
            reply = try await h.get("/goim/online/room?type=live&rooms=2000,1000")
            #expect(reply.body == #"{"code":0,"message":"","data":{"1000":3,"2000":0}}"#)
            reply = try await h.get("/goim/online/room?type=live")
            #expect(reply.status == 400)
            #expect(reply.body == #"{"code":-400,"message":"rooms: at least one room is required"}"#)
        }
    }

    @Test("online/total sums the online comets' registry counts")
    func onlineTotal() async throws {
        try await LogicHarness.run { h in
            #expect(try await h.get("/goim/online/total").body == #"{"code":0,"message":"","data":{"conn_count":0,"ip_count":0}}"#)
            try await h.register(h.comet("a"), connCount: 10, ipCount: 4)
            try await h.register(h.comet("b"), connCount: 5, ipCount: 5)
            try await h.register(h.comet("c"), connCount: 100, ipCount: 100, offline: true)
            try await h.server.refresher.refreshNow()
            #expect(try await h.get("/goim/online/total").body == #"{"code":0,"message":"","data":{"conn_count":15,"ip_count":9}}"#)
        }
    }

    @Test("nodes/weighted with no comet falls back to the default domain, exactly goim's JSON (bug 29)")
    func nodesWeightedEmpty() async throws {
        try await LogicHarness.run { h in
            let reply = try await h.get("/goim/nodes/weighted?platform=web")
            #expect(
                reply.body
                    == #"{"code":0,"message":"","data":{"domain":"conn.goim.io","tcp_port":3101,"ws_port":3102,"wss_port":3103,"heartbeat":240,"nodes":["conn.goim.io"],"backoff":{"max_delay":300,"base_delay":3,"factor":1.8,"jitter":0.3},"heartbeat_max":2}}"#
            )
        }
    }

    @Test("nodes/weighted: web gets domains, others addresses; offline comets and empty addresses are skipped")
    func nodesWeighted() async throws {
        try await LogicHarness.run { h in
            let (a, b, c) = (h.comet("a"), h.comet("b"), h.comet("c"))
            try await h.register(a, connCount: 0, weight: 10, addrs: ["10.0.0.1"])
            try await h.register(b, connCount: 0, weight: 10, addrs: ["10.0.0.2", ""])
            try await h.register(c, connCount: 0, weight: 50, offline: true, addrs: ["10.0.0.3"])
            try await h.server.refresher.refreshNow()
            let web = try await h.get("/goim/nodes/weighted?platform=web")
            #expect(web.body.contains(#""nodes":["\#(a).goim.io","\#(b).goim.io"]"#))
            // Each pick counts one connection for the first comet: a ties with b once more (an exact .5
            // rounds down), then b is ahead.
            let ios = try await h.get("/goim/nodes/weighted?platform=ios")
            #expect(ios.body.contains(#""nodes":["10.0.0.1","10.0.0.2"]"#), "\(ios.body)")
            let again = try await h.get("/goim/nodes/weighted?platform=ios")
            #expect(again.body.contains(#""nodes":["10.0.0.2","10.0.0.1"]"#), "\(again.body)")
            #expect(!again.body.contains("10.0.0.3"))

            // An empty address list (goim's default ADDRS) falls back to the default domain.
            try await h.registry.deregister(hostname: a)
            try await h.registry.deregister(hostname: b)
            try await h.register(a, addrs: [""])
            try await h.server.refresher.refreshNow()
            #expect(try await h.get("/goim/nodes/weighted").body.contains(#""nodes":["conn.goim.io"]"#))
        }
    }

    @Test("nodes/instances is null without comets, else goim's Discovery instance shape")
    func nodesInstances() async throws {
        try await LogicHarness.run { h in
            #expect(try await h.get("/goim/nodes/instances").body == #"{"code":0,"message":"","data":null}"#)
            let a = h.comet("a")
            try await h.register(a, connCount: 3, ipCount: 2, weight: 7, addrs: ["1.2.3.4", "5.6.7.8"], region: "sh")
            try await h.register(h.comet("z"), offline: true)
            try await h.server.refresher.refreshNow()
            let instance = try #require(h.server.cluster.instances.first { $0.hostname == a })
            let reply = try await h.get("/goim/nodes/instances")
            #expect(
                reply.body
                    == #"{"code":0,"message":"","data":[{"region":"sh","zone":"","env":"","appid":"goim.comet","hostname":"\#(a)","addrs":["grpc://127.0.0.1:3109"],"version":"","latest_timestamp":\#(instance.updatedAt),"metadata":{"addrs":"1.2.3.4,5.6.7.8","conn_count":"3","ip_count":"2","offline":"false","weight":"7"}}]}"#
            )
        }
    }

    @Test("/ready reports Redis and NATS; /health only says the process answers")
    func health() async throws {
        try await LogicHarness.run { h in
            var reply = try await h.get("/ready")
            #expect(reply.status == 200)
            #expect(reply.body == #"{"status":"ok","redis":"ok","nats":"ok"}"#)
            await h.redisServer.stop()
            reply = try await h.get("/ready")
            #expect(reply.status == 503)
            #expect(reply.body.hasPrefix(#"{"status":"unavailable","redis":"redis unavailable: "#), "\(reply.body)")
            #expect(reply.body.hasSuffix(#","nats":"ok"}"#))
            reply = try await h.get("/health")
            #expect(reply.status == 200)
            #expect(reply.body == #"{"status":"ok"}"#)
        }
    }

    @Test("/metrics exposes logic's families in Prometheus text, with HTTP requests by route and code")
    func metrics() async throws {
        try await LogicHarness.run { h in
            _ = try await h.get("/goim/online/total")
            _ = try await h.get("/no/such/route")
            #expect(try await h.post("/goim/push/room?operation=1&type=live&room=1", "x").body == HTTPPushTests.ok)
            let reply = try await h.get("/metrics")
            #expect(reply.status == 200)
            let text = reply.body
            #expect(text.contains(#"goim_logic_http_requests_total{route="/goim/online/total",code="200"} 1"#), "\(text)")
            #expect(text.contains(#"goim_logic_http_requests_total{route="other",code="404"} 1"#))
            #expect(text.contains(#"goim_logic_queue_publish_duration_seconds_count{type="room"} 1"#))
            #expect(text.contains("# TYPE goim_logic_redis_commands_total counter"))
            #expect(text.contains("goim_logic_online_connections "))
        }
    }
}
