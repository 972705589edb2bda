import Foundation
import GoIMRPC
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import Logic

/// `/goim/push/*` against real Redis and NATS: the exact JSON replies and the exact `PushMsg`s on NATS.
@Suite("HTTP push API", .startsServers)
struct HTTPPushTests {
    static let ok = #"{"code":0,"message":""}"#

    @Test("push/keys groups keys per comet, one PUSH message each; unknown keys are skipped")
    func pushKeys() async throws {
        try await LogicHarness.run { h in
            let (a, b) = (h.comet("a"), h.comet("b"))
            let routing = h.server.core.routing
            try await routing.addMapping(mid: 0, key: "k1", server: a)
            try await routing.addMapping(mid: 0, key: "k2", server: a)
            try await routing.addMapping(mid: 7, key: "k3", server: b)
            let subscriber = try await h.pushSubscriber()

            let reply = try await h.post("/goim/push/keys?operation=1000&keys=k1&keys=k3&keys=k2&keys=unknown", "hello")
            #expect(reply.status == 200)
            #expect(reply.body == Self.ok)
            #expect(reply.contentType == "application/json; charset=utf-8")

            var messages: [String: Goim_Logic_PushMsg] = [:]
            for _ in 0..<2 {
                let (subject, message) = try await subscriber.next()
                #expect(subject == "\(h.configuration.nats.subject).push")
                messages[message.server] = message
            }
            var expectedA = Goim_Logic_PushMsg()
            expectedA.type = .push
            expectedA.operation = 1000
            expectedA.server = a
            expectedA.keys = ["k1", "k2"]
            expectedA.msg = Data("hello".utf8)
            var expectedB = expectedA
            expectedB.server = b
            expectedB.keys = ["k3"]
            #expect(messages[a] == expectedA)
            #expect(messages[b] == expectedB)
            try await subscriber.expectNothing()
        }
    }

    @Test("push/keys accepts comma-separated keys (extension) and only unknown keys give code 0 and no message")
    func pushKeysCommaAndUnknown() async throws {
        try await LogicHarness.run { h in
            let a = h.comet("a")
            try await h.server.core.routing.addMapping(mid: 0, key: "x1", server: a)
            try await h.server.core.routing.addMapping(mid: 0, key: "x2", server: a)
            let subscriber = try await h.pushSubscriber()
            #expect(try await h.post("/goim/push/keys?operation=5&keys=x1,x2", "m").body == Self.ok)
            let (_, message) = try await subscriber.next()
            #expect(message.keys == ["x1", "x2"])
            #expect(message.operation == 5)

            #expect(try await h.post("/goim/push/keys?operation=5&keys=nobody", "m").body == Self.ok)
            try await subscriber.expectNothing()
        }
    }

    @Test("push/keys parameter errors: no keys, bad operation, body over the limit")
    func pushKeysErrors() async throws {
        try await LogicHarness.run({ $0.httpServer.maxBodySize = 8 }) { h in
            var reply = try await h.post("/goim/push/keys?operation=1000", "m")
            #expect(reply.status == 400)
            #expect(reply.body == #"{"code":-400,"message":"keys: at least one key is required"}"#)

            reply = try await h.post("/goim/push/keys?operation=1000&keys=", "m")
            #expect(reply.body == #"{"code":-400,"message":"keys: at least one key is required"}"#)

            reply = try await h.post("/goim/push/keys?operation=abc&keys=k", "m")
            #expect(reply.status == 400)
            #expect(reply.body == #"{"code":-400,"message":"operation: \"abc\" is not a valid int32"}"#)

            reply = try await h.post("/goim/push/keys?operation=99999999999&keys=k", "m")
            #expect(reply.body == #"{"code":-400,"message":"operation: \"99999999999\" is not a valid int32"}"#)

            reply = try await h.post("/goim/push/keys?operation=1&keys=k", "123456789")
            #expect(reply.status == 400)
            #expect(
                reply.body
                    == #"{"code":-400,"message":"body: the message is larger than the limit of 8 bytes (httpServer.maxBodySize)"}"#)
        }
    }

    @Test("push/mids: several devices of several members on several comets (goim's documented curl call)")
    func pushMids() async throws {
        try await LogicHarness.run { h in
            let (a, b) = (h.comet("a"), h.comet("b"))
            let routing = h.server.core.routing
            try await routing.addMapping(mid: 123, key: "phone", server: a)
            try await routing.addMapping(mid: 123, key: "web", server: b)
            try await routing.addMapping(mid: 456, key: "tablet", server: a)
            try await routing.addMapping(mid: 789, key: "other", server: b)
            let subscriber = try await h.pushSubscriber()

            let reply = try await h.post("/goim/push/mids?operation=1000&mids=123&mids=456", "mid message")
            #expect(reply.status == 200)
            #expect(reply.body == Self.ok)
            var messages: [String: Goim_Logic_PushMsg] = [:]
            for _ in 0..<2 {
                let (subject, message) = try await subscriber.next()
                #expect(subject == "\(h.configuration.nats.subject).push")
                messages[message.server] = message
            }
            #expect(messages[a]?.keys == ["phone", "tablet"])
            #expect(messages[b]?.keys == ["web"])
            for message in messages.values {
                #expect(message.type == .push)
                #expect(message.operation == 1000)
                #expect(message.msg == Data("mid message".utf8))
                #expect(message.room.isEmpty && message.speed == 0)
            }
            try await subscriber.expectNothing()

            // comma form, and a member without sessions
            #expect(try await h.post("/goim/push/mids?operation=1&mids=789,999", "x").body == Self.ok)
            let (_, other) = try await subscriber.next()
            #expect(other.server == b && other.keys == ["other"])
        }
    }

    @Test("push/mids parameter errors")
    func pushMidsErrors() async throws {
        try await LogicHarness.run { h in
            var reply = try await h.post("/goim/push/mids?operation=1000&mids=12x", "m")
            #expect(reply.status == 400)
            #expect(reply.body == #"{"code":-400,"message":"mids: \"12x\" is not an int64"}"#)
            reply = try await h.post("/goim/push/mids?operation=1000", "m")
            #expect(reply.body == #"{"code":-400,"message":"mids: at least one mid is required"}"#)
        }
    }

    @Test("push/room publishes one ROOM message for <type>://<room> (goim's documented curl call)")
    func pushRoom() async throws {
        try await LogicHarness.run { h in
            let subscriber = try await h.pushSubscriber()
            let reply = try await h.post(
                "/goim/push/room?operation=1000&type=live&room=1000", "room message",
                headers: [.contentType: "application/x-www-form-urlencoded"])
            #expect(reply.body == Self.ok)
            let (subject, message) = try await subscriber.next()
            #expect(subject == "\(h.configuration.nats.subject).room")
            var expected = Goim_Logic_PushMsg()
            expected.type = .room
            expected.operation = 1000
            expected.room = "live://1000"
            expected.msg = Data("room message".utf8)
            #expect(message == expected)
            // goim's protobuf bytes (reference Appendix A.2) for the same content with body "hello"
            expected.msg = Data("hello".utf8)
            #expect(try hex(expected.serializedBytes()) == "080110e8072a0b6c6976653a2f2f313030303a0568656c6c6f")
        }
    }

    @Test("push/room requires operation, type and room")
    func pushRoomErrors() async throws {
        try await LogicHarness.run { h in
            var reply = try await h.post("/goim/push/room?type=live&room=1", "m")
            #expect(reply.status == 400)
            #expect(reply.body == #"{"code":-400,"message":"operation: required parameter is missing"}"#)
            reply = try await h.post("/goim/push/room?operation=0&type=live&room=1", "m")
            #expect(reply.body == #"{"code":-400,"message":"operation: required, must not be 0"}"#)
            reply = try await h.post("/goim/push/room?operation=1&room=1", "m")
            #expect(reply.body == #"{"code":-400,"message":"type: required parameter is missing or empty"}"#)
            reply = try await h.post("/goim/push/room?operation=1&type=live&room=", "m")
            #expect(reply.body == #"{"code":-400,"message":"room: required parameter is missing or empty"}"#)
        }
    }

    @Test("push/all publishes one BROADCAST message with the speed (goim's documented curl call)")
    func pushAll() async throws {
        try await LogicHarness.run { h in
            let subscriber = try await h.pushSubscriber()
            #expect(try await h.post("/goim/push/all?operation=1000", "broadcast message").body == Self.ok)
            var (subject, message) = try await subscriber.next()
            #expect(subject == "\(h.configuration.nats.subject).broadcast")
            var expected = Goim_Logic_PushMsg()
            expected.type = .broadcast
            expected.operation = 1000
            expected.msg = Data("broadcast message".utf8)
            #expect(message == expected)

            #expect(try await h.post("/goim/push/all?operation=1000&speed=100", "hi").body == Self.ok)
            (subject, message) = try await subscriber.next()
            expected.speed = 100
            expected.msg = Data("hi".utf8)
            #expect(message == expected)
            #expect(try hex(message.serializedBytes()) == "080210e80718643a026869")

            let reply = try await h.post("/goim/push/all?speed=1", "x")
            #expect(reply.body == #"{"code":-400,"message":"operation: required parameter is missing"}"#)
            let negative = try await h.post("/goim/push/all?operation=1&speed=-1", "x")
            #expect(negative.body == #"{"code":-400,"message":"speed: must not be negative"}"#)
        }
    }

    @Test("the optional bearer token guards /goim/push/* only")
    func pushToken() async throws {
        try await LogicHarness.run({ $0.httpServer.pushToken = "s3cret" }) { h in
            var reply = try await h.post("/goim/push/all?operation=1", "x")
            #expect(reply.status == 401)
            #expect(
                reply.body
                    == #"{"code":-401,"message":"authorization: the push API requires \"Authorization: Bearer \u003ctoken\u003e\""}"#)
            reply = try await h.post("/goim/push/all?operation=1", "x", headers: [.authorization: "Bearer wrong"])
            #expect(reply.status == 401)
            #expect(reply.body == #"{"code":-401,"message":"authorization: the bearer token is not valid"}"#)
            reply = try await h.post("/goim/push/all?operation=1", "x", headers: [.authorization: "Bearer s3cret"])
            #expect(reply.body == Self.ok)
            // other routes stay open
            #expect(try await h.get("/goim/online/total").status == 200)
        }
    }

    @Test("a push retried with the same Idempotency-Key is stored in the stream once; other keys and no key are not merged")
    func idempotencyKey() async throws {
        try await LogicHarness.run { h in
            let route = "/goim/push/room?operation=1000&type=live&room=idem"
            for _ in 0..<3 {
                #expect(try await h.post(route, "once", headers: [LogicHTTPResponder.idempotencyKeyField: "order-42"]).body == Self.ok)
            }
            #expect(try await h.post(route, "other", headers: [LogicHTTPResponder.idempotencyKeyField: "order-43"]).body == Self.ok)
            // The same key on another route is another push.
            #expect(
                try await h.post("/goim/push/all?operation=1000", "all", headers: [LogicHTTPResponder.idempotencyKeyField: "order-42"])
                    .body == Self.ok)
            for _ in 0..<2 { #expect(try await h.post(route, "no-key").body == Self.ok) }
            let bad = try await h.post(route, "x", headers: [LogicHTTPResponder.idempotencyKeyField: "has space"])
            #expect(bad.status == 400)
            #expect(bad.body.contains("Idempotency-Key"))

            let consumer = try await h.nats.jetStream().pullConsumer(
                stream: h.configuration.nats.stream, durable: "idem-check", filterSubject: nil)
            var bodies: [String] = []
            while true {
                let batch = try await consumer.fetch(max: 16, timeout: .milliseconds(500))
                if batch.isEmpty { break }
                for message in batch {
                    let push = try Goim_Logic_PushMsg(serializedBytes: message.payload)
                    bodies.append(String(decoding: push.msg, as: UTF8.self))
                    try await message.ack()
                }
            }
            await consumer.close()
            #expect(bodies.sorted() == ["all", "no-key", "no-key", "once", "other"])
        }
    }

    @Test("unknown routes and wrong methods get gin's plain 404")
    func notFound() async throws {
        try await LogicHarness.run { h in
            for (method, uri) in [
                (HTTPRequest.Method.get, "/goim/push/keys"), (.post, "/goim/online/total"), (.get, "/nope"),
                (.post, "/goim/push/mids=1"),
            ] {
                let reply = try await h.http(method, uri)
                #expect(reply.status == 404)
                #expect(reply.body == "404 page not found")
            }
        }
    }
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
