import Foundation
import GRPCCore
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import Redis
import ServiceLifecycle
import ServiceRuntime
import TestSupport
import Testing

@testable import Logic

/// `goim.logic.Logic` over a real gRPC connection, checked against Redis contents.
@Suite("gRPC goim.logic.Logic", .startsServers)
struct RPCTests {
    static func connectRequest(server: String, _ json: String) -> Goim_Logic_ConnectReq {
        var request = Goim_Logic_ConnectReq()
        request.server = server
        request.token = Data(json.utf8)
        return request
    }

    @Test("Connect decodes goim's auth body, stores mid_/key_ with the TTL and answers the heartbeat in ns")
    func connect() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            let reply = try await h.withLogicClient { client in
                try await client.connect(
                    Self.connectRequest(
                        server: a,
                        #"{"mid":123, "key":"dev-1", "room_id":"live://1000", "platform":"web", "accepts":[1000,1001,1002]}"#))
            }
            #expect(reply.mid == 123)
            #expect(reply.key == "dev-1")
            #expect(reply.roomID == "live://1000")
            #expect(reply.accepts == [1000, 1001, 1002])
            #expect(reply.heartbeat == 480_000_000_000)  // 4m × 2 in nanoseconds

            #expect(try await h.command("HGETALL", "mid_123") == .array([.bulkString(.init(string: "dev-1")), .bulkString(.init(string: a))]))
            #expect(try await h.command("GET", "key_dev-1").string == a)
            let ttlMid = try #require(try await h.command("TTL", "mid_123").int)
            let ttlKey = try #require(try await h.command("TTL", "key_dev-1").int)
            #expect((1795...1800).contains(ttlMid))
            #expect((1795...1800).contains(ttlKey))
        }
    }

    @Test("Connect without a key generates a lowercase UUID v4; mid 0 stores no mid_ hash")
    func connectGeneratesKey() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            let reply = try await h.withLogicClient { client in
                try await client.connect(Self.connectRequest(server: a, #"{"room_id":"test://1"}"#))
            }
            #expect(reply.key.wholeMatch(of: /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/) != nil)
            #expect(try await h.command("GET", "key_\(reply.key)").string == a)
            #expect(try await h.command("EXISTS", "mid_0").int == 0)
        }
    }

    @Test("goim mode: a chosen key connected for another member is refused (ALREADY_EXISTS); the same member takes it over")
    func keyTakeover() async throws {
        try await LogicHarness.run { h in
            let (a, b) = (h.comet("a"), h.comet("b"))
            func connect(_ json: String, on server: String) async throws -> Goim_Logic_ConnectReply {
                try await h.withLogicClient { try await $0.connect(Self.connectRequest(server: server, json)) }
            }
            _ = try await connect(#"{"mid":7,"key":"phone-7"}"#, on: a)
            // Another member naming that key is refused, wherever it connects; the holder's routing is untouched.
            for server in [a, b] {
                let error = await #expect(throws: RPCError.self) { _ = try await connect(#"{"mid":8,"key":"phone-7"}"#, on: server) }
                #expect(error?.code == .alreadyExists)
                #expect(error?.message.contains(#"key "phone-7" is connected for another member than 8"#) == true)
            }
            let guest = await #expect(throws: RPCError.self) { _ = try await connect(#"{"key":"phone-7"}"#, on: b) }
            #expect(guest?.code == .alreadyExists)
            #expect(try await h.command("GET", "key_phone-7").string == a)
            #expect(try await h.command("EXISTS", "mid_8").int == 0)
            // The same member reconnecting (on another comet too) takes its key over, as in goim.
            #expect(try await connect(#"{"mid":7,"key":"phone-7"}"#, on: b).key == "phone-7")
            #expect(try await h.command("GET", "key_phone-7").string == b)
            // Once the holder is gone, the key is free for anyone.
            _ = try await h.withLogicClient { client in
                var request = Goim_Logic_DisconnectReq()
                (request.mid, request.key, request.server) = (7, "phone-7", b)
                return try await client.disconnect(request)
            }
            #expect(try await connect(#"{"mid":8,"key":"phone-7"}"#, on: a).mid == 8)
            // The batch path applies the same rule, item by item.
            let batch = try await h.withBatchClient { client in
                var request = Swiftgoim_Logic_ConnectBatchReq()
                request.requests = [
                    Self.connectRequest(server: b, #"{"mid":9,"key":"phone-7"}"#),
                    Self.connectRequest(server: b, #"{"mid":8,"key":"phone-7"}"#),
                    Self.connectRequest(server: b, #"{"mid":9,"key":"tablet-9"}"#),
                ]
                return try await client.connectBatch(request)
            }
            #expect(batch.results.map(\.status.code) == [Int32(RPCError.Code.alreadyExists.rawValue), 0, 0])
        }
    }

    @Test("auth.allowKeyTakeover = true brings goim's rule back: any member may take a connected key")
    func keyTakeoverAllowed() async throws {
        try await LogicHarness.run({ $0.auth.allowKeyTakeover = true }) { h in
            let a = h.comet("a")
            for mid in [7, 8] {
                let reply = try await h.withLogicClient { try await $0.connect(Self.connectRequest(server: a, #"{"mid":\#(mid),"key":"shared"}"#)) }
                #expect(reply.mid == Int64(mid))
            }
            #expect(try await h.command("HGET", "mid_8", "shared").string == a)
        }
    }

    @Test("Connect with a malformed auth body fails with a clear reason")
    func connectBadBody() async throws {
        try await LogicHarness.run { h in
            let error = await #expect(throws: RPCError.self) {
                _ = try await h.withLogicClient { client in
                    try await client.connect(Self.connectRequest(server: h.comet("a"), #"{"mid":"123"}"#))
                }
            }
            #expect(error?.code == .unauthenticated)
            #expect(error?.message.hasPrefix(#"authentication failed: invalid auth body: field "mid""#) == true, "\(String(describing: error))")
        }
    }

    @Test("Disconnect removes the session; a second one reports has = false")
    func disconnect() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            try await h.withLogicClient { client in
                _ = try await client.connect(Self.connectRequest(server: a, #"{"mid":9,"key":"k9"}"#))
                var request = Goim_Logic_DisconnectReq()
                request.mid = 9
                request.key = "k9"
                request.server = a
                #expect(try await client.disconnect(request).has)
                #expect(try await h.command("EXISTS", "key_k9").int == 0)
                #expect(try await h.command("HEXISTS", "mid_9", "k9").int == 0)
                #expect(try await client.disconnect(request).has == false)
            }
        }
    }

    @Test("An old connection's Disconnect does not delete a newer session on another comet (goim bug 1)")
    func disconnectKeepsNewerSession() async throws {
        try await LogicHarness.run { h in
            let (old, new) = (h.comet("old"), h.comet("new"))
            try await h.withLogicClient { client in
                _ = try await client.connect(Self.connectRequest(server: old, #"{"mid":42,"key":"same"}"#))
                _ = try await client.connect(Self.connectRequest(server: new, #"{"mid":42,"key":"same"}"#))
                var request = Goim_Logic_DisconnectReq()
                request.mid = 42
                request.key = "same"
                request.server = old
                #expect(try await client.disconnect(request).has == false)
            }
            #expect(try await h.command("GET", "key_same").string == new)
            #expect(try await h.command("HGET", "mid_42", "same").string == new)
            // and key pushes still reach the newer comet
            let subscriber = try await h.pushSubscriber()
            #expect(try await h.post("/goim/push/mids?operation=1&mids=42", "x").body == HTTPPushTests.ok)
            #expect(try await subscriber.next().message.server == new)
        }
    }

    @Test("Heartbeat refreshes the expiry and re-creates an expired session")
    func heartbeat() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            try await h.withLogicClient { client in
                _ = try await client.connect(Self.connectRequest(server: a, #"{"mid":5,"key":"hb"}"#))
                _ = try await h.command("EXPIRE", "key_hb", "20")
                _ = try await h.command("EXPIRE", "mid_5", "20")
                var request = Goim_Logic_HeartbeatReq()
                request.mid = 5
                request.key = "hb"
                request.server = a
                _ = try await client.heartbeat(request)
                #expect(try #require(try await h.command("TTL", "key_hb").int) > 1790)
                #expect(try #require(try await h.command("TTL", "mid_5").int) > 1790)

                _ = try await h.command("DEL", "key_hb", "mid_5")
                _ = try await client.heartbeat(request)
                #expect(try await h.command("GET", "key_hb").string == a)
                #expect(try await h.command("HGET", "mid_5", "hb").string == a)
                #expect(try #require(try await h.command("TTL", "key_hb").int) > 1790)
            }
        }
    }

    @Test("Routing expires after redis.expire and a heartbeat brings it back")
    func routingExpiry() async throws {
        try await LogicHarness.run({ $0.redis.expire = .seconds(2) }) { h in
            let a = h.comet("a")
            try await h.withLogicClient { client in
                _ = try await client.connect(Self.connectRequest(server: a, #"{"mid":6,"key":"short"}"#))
                // The TTL is redis.expire in whole seconds (it may already have ticked down on a busy machine).
                let ttl = try #require(try await h.command("PTTL", "key_short").int)
                #expect(ttl > 0 && ttl <= 2000)
                try await waitUntil("key_short to expire", timeout: .seconds(10)) {
                    try await h.command("EXISTS", "key_short").int == 0
                }
                #expect(try await h.command("EXISTS", "mid_6").int == 0)
                var request = Goim_Logic_HeartbeatReq()
                request.mid = 6
                request.key = "short"
                request.server = a
                _ = try await client.heartbeat(request)
                #expect(try await h.command("GET", "key_short").string == a)
                #expect(try await h.command("HGET", "mid_6", "short").string == a)
            }
        }
    }

    @Test("RenewOnline writes goim's ol_ shards, replaces them all each time (bug 25) and answers the aggregate")
    func renewOnline() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            try await h.register(a)
            try await h.withLogicClient { client in
                var request = Goim_Logic_OnlineReq()
                request.server = a
                request.roomCount = ["live://1000": 3, "test://1": 1]
                _ = try await client.renewOnline(request)

                let fields = try await h.redis.hgetall("ol_\(a)")
                #expect(Set(fields.keys) == ["43", "28"])  // CityHash32 mod 64 (reference Appendix A)
                let shard43 = String(buffer: try #require(fields["43"]))
                let updated = try #require(Int64(shard43.split(separator: ":").last!.dropLast()))
                #expect(shard43 == #"{"server":"\#(a)","room_count":{"live://1000":3},"updated":\#(updated)}"#)
                #expect(String(buffer: try #require(fields["28"])) == #"{"server":"\#(a)","room_count":{"test://1":1},"updated":\#(updated)}"#)
                #expect(abs(updated - Int64(Date().timeIntervalSince1970)) < 5)
                #expect(try #require(try await h.command("TTL", "ol_\(a)").int) > 1790)

                try await h.server.refresher.refreshNow()
                request.roomCount = ["test://1": 2]
                let reply = try await client.renewOnline(request)
                #expect(reply.allRoomCount == ["live://1000": 3, "test://1": 1])  // the aggregate as last recomputed
                #expect(Set(try await h.redis.hgetall("ol_\(a)").keys) == ["28"])  // shard 43 is gone
                try await h.server.refresher.refreshNow()
                #expect(try await client.renewOnline(request).allRoomCount == ["test://1": 2])

                request.roomCount = [:]
                _ = try await client.renewOnline(request)
                #expect(try await h.command("EXISTS", "ol_\(a)").int == 0)
            }
        }
    }

    @Test("RenewOnline sent gzip-compressed, as goim's comet does, is accepted")
    func renewOnlineGzip() async throws {
        try await LogicHarness.run { h in
            var request = Goim_Logic_OnlineReq()
            request.server = h.comet("gz")
            request.roomCount = ["live://1": 1]
            var options = CallOptions.defaults
            options.compression = .gzip
            try await h.withLogicClient(compression: .gzip) { client in
                _ = try await client.renewOnline(request, options: options)
            }
            #expect(try await h.command("HEXISTS", "ol_\(request.server)", String("live://1".cityHash32 % 64)).int == 1)

            // Control: a server refusing compression rejects the same call, so the client did compress.
            var strictOptions = GRPCServerService.Options()
            strictOptions.acceptedCompression = .none
            let strict = GRPCServerService(
                name: "strict", address: .init(host: "127.0.0.1", port: 0),
                services: [LogicRPCService(core: h.server.core, logger: .init(label: "t"))], options: strictOptions,
                logger: .init(label: "t"))
            let group = ServiceGroup(configuration: ServiceProcess.configuration([strict], logger: .init(label: "t"), maximumShutdown: .seconds(5)))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                let port = try await strict.listeningPort()
                await #expect(throws: RPCError.self) {
                    try await h.withLogicClient(compression: .gzip, port: port) { client in
                        _ = try await client.renewOnline(request, options: options)
                    }
                }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
    }

    @Test("Stale online counts are ignored and deleted")
    func staleOnline() async throws {
        try await LogicHarness.run({ $0.online.staleAfter = .seconds(60) }) { h in
            let (fresh, stale) = (h.comet("fresh"), h.comet("stale"))
            try await h.register(fresh)
            try await h.register(stale)
            let now = Int64(Date().timeIntervalSince1970)
            try await h.server.core.online.storeOnline(ServerOnline(server: fresh, roomCount: ["live://1": 2], updated: now))
            try await h.server.core.online.storeOnline(ServerOnline(server: stale, roomCount: ["live://1": 5], updated: now - 61))
            try await h.server.refresher.refreshNow()
            #expect(h.server.cluster.roomCount == ["live://1": 2])
            #expect(try await h.command("EXISTS", "ol_\(stale)").int == 0)
            #expect(try await h.command("EXISTS", "ol_\(fresh)").int == 1)
        }
    }

    @Test("Receive publishes the upstream message as protobuf ReceiveReq on nats.receiveSubject")
    func receive() async throws {
        try await LogicHarness.run { h in
            let subscriber = PushSubscriber(try await h.nats.subscribe(h.configuration.nats.receiveSubject))
            var request = Goim_Logic_ReceiveReq()
            request.mid = 77
            request.proto = Goim_Protocol_Proto(version: 1, operation: 4, sequence: 9, body: Array("hi there".utf8))
            _ = try await h.withLogicClient { client in try await client.receive(request) }
            let message = try await subscriber.nextRaw()
            #expect(message.subject == h.configuration.nats.receiveSubject)
            #expect(try Goim_Logic_ReceiveReq(serializedBytes: message.payload) == request)
            #expect(message.headers["Goim-Mid"] == ["77"])
            #expect(message.headers["Goim-Operation"] == ["4"])
        }
    }

    @Test("The Nodes RPC answers what /goim/nodes/weighted answers")
    func nodes() async throws {
        try await LogicHarness.run { h in
            var request = Goim_Logic_NodesReq()
            request.platform = "web"
            request.clientIp = "1.2.3.4"
            let reply = try await h.withLogicClient { client in try await client.nodes(request) }
            #expect(reply.domain == "conn.goim.io")
            #expect(reply.nodes == ["conn.goim.io"])
            #expect(reply.heartbeat == 240 && reply.heartbeatMax == 2)
            #expect(reply.tcpPort == 3101 && reply.wsPort == 3102 && reply.wssPort == 3103)
            #expect(reply.backoff.maxDelay == 300 && reply.backoff.baseDelay == 3)
            #expect(reply.backoff.factor == 1.8 && reply.backoff.jitter == 0.3)
            let http = try await h.get("/goim/nodes/weighted?platform=web")
            #expect(http.body == #"{"code":0,"message":"","data":\#(LogicHTTPResponder.json(reply).encoded())}"#)
        }
    }
}

@Suite("gRPC goim.logic.Logic with the internal secret", .startsServers)
struct RPCAuthTests {
    @Test("with rpcAuth.secret, calls without it or with another are refused (UNAUTHENTICATED); with it they pass")
    func secretRequired() async throws {
        try await LogicHarness.run({ $0.rpcAuth.secret = "logic-s3cret" }) { h in
            let a = h.comet("a")
            let request = RPCTests.connectRequest(server: a, #"{"mid":1,"key":"k1"}"#)
            for secret in ["", "wrong"] {
                await #expect {
                    try await h.withLogicClient(secret: secret) { client in _ = try await client.connect(request) }
                } throws: { error in
                    (error as? RPCError)?.code == .unauthenticated
                }
            }
            #expect(try await h.command("EXISTS", "key_k1").int == 0)
            let reply = try await h.withLogicClient(secret: "logic-s3cret") { client in try await client.connect(request) }
            #expect(reply.key == "k1")
        }
    }
}
