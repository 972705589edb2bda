import Foundation
import GRPCCore
import GoIMConfig
import GoIMRPC
import History
import HTTPTypes
import NIOCore
import Testing

@testable import Logic

/// `GET /goim/history/room` and `swiftgoim.logic.History/Room` over a history job would have written.
@Suite(.startsServers) struct HistoryAPITests {
    static func write(_ h: LogicHarness, room: String, count: Int, size: Int) async throws -> String {
        let store = HistoryStore(redis: h.redis)
        let appends = (1...count).map {
            HistoryStore.Append(
                stream: .room(room), messageID: "m\($0)", operation: 1000, body: ByteBuffer(string: "msg \($0)"),
                limits: HistoryLimits(size: size, ttl: .seconds(60)))
        }
        return try await store.append(appends).last!.get().epoch
    }

    @Test func httpRoute() async throws {
        try await LogicHarness.run({
            $0.history.rooms = ["live": HistoryLimits(size: 5, ttl: .seconds(60))]
            $0.httpServer.pushToken = "tok"
        }) { h in
            let epoch = try await Self.write(h, room: "live://r", count: 7, size: 5)
            func get(_ uri: String) async throws -> (status: Int, json: [String: Any]) {
                let reply = try await h.http(.get, uri, headers: [.authorization: "Bearer tok"])
                return (reply.status, try #require(try JSONSerialization.jsonObject(with: Data(reply.body.utf8)) as? [String: Any]))
            }
            // The push token applies.
            #expect(try await h.get("/goim/history/room?type=live&room=r").status == 401)

            var (status, json) = try await get("/goim/history/room?type=live&room=r&since=4&epoch=\(epoch)")
            var data = try #require(json["data"] as? [String: Any])
            #expect(status == 200 && json["code"] as? Int == 0)
            #expect(data["epoch"] as? String == epoch && data["top"] as? Int == 7 && data["first"] as? Int == 3)
            #expect(data["complete"] as? Bool == true)
            var messages = try #require(data["messages"] as? [[String: Any]])
            #expect(messages.compactMap { $0["offset"] as? Int } == [5, 6, 7])
            #expect(messages.compactMap { $0["op"] as? Int } == [1000, 1000, 1000])
            #expect(messages.first?["body"] as? String == Data("msg 5".utf8).base64EncodedString())

            // From the start: 1 and 2 were trimmed (size 5), so not complete; a limit cuts the page.
            (_, json) = try await get("/goim/history/room?type=live&room=r")
            data = try #require(json["data"] as? [String: Any])
            messages = try #require(data["messages"] as? [[String: Any]])
            #expect(messages.compactMap { $0["offset"] as? Int } == [3, 4, 5, 6, 7] && data["complete"] as? Bool == false)
            (_, json) = try await get("/goim/history/room?type=live&room=r&since=2&limit=2")
            data = try #require(json["data"] as? [String: Any])
            #expect((data["messages"] as? [[String: Any]])?.count == 2 && data["complete"] as? Bool == false)

            for (uri, parameter) in [
                ("/goim/history/room?room=r", "type"), ("/goim/history/room?type=live", "room"),
                ("/goim/history/room?type=live&room=r&since=x", "since"), ("/goim/history/room?type=live&room=r&since=-1", "since"),
                ("/goim/history/room?type=live&room=r&limit=-5", "limit"), ("/goim/history/room?type=chat&room=r", "type"),
            ] {
                let (status, json) = try await get(uri)
                #expect(status == 400 && json["code"] as? Int == -400, "\(uri)")
                #expect((json["message"] as? String)?.hasPrefix(parameter + ":") == true, "\(uri): \(json)")
            }
        }
    }

    @Test func userHistoryOverHTTPAndGRPC() async throws {
        try await LogicHarness.run({ $0.history.mids = HistoryLimits(size: 3, ttl: .seconds(60)) }) { h in
            let store = HistoryStore(redis: h.redis)
            let appends = (1...4).map {
                HistoryStore.Append(
                    stream: .mid(42), messageID: "m\($0)", operation: 1000, body: ByteBuffer(string: "to 42: \($0)"),
                    limits: HistoryLimits(size: 3, ttl: .seconds(60)))
            }
            let epoch = try await store.append(appends).last!.get().epoch
            let reply = try await h.get("/goim/history/mid?mid=42&since=2&epoch=\(epoch)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(reply.body.utf8)) as? [String: Any])
            let data = try #require(json["data"] as? [String: Any])
            #expect(data["top"] as? Int == 4 && data["first"] as? Int == 2 && data["complete"] as? Bool == true)
            #expect((data["messages"] as? [[String: Any]])?.compactMap { $0["offset"] as? Int } == [3, 4])
            for (uri, parameter) in [("/goim/history/mid", "mid"), ("/goim/history/mid?mid=x", "mid"), ("/goim/history/mid?mid=1&limit=x", "limit")] {
                let bad = try await h.get(uri)
                #expect(bad.status == 400 && bad.body.contains("\"\(parameter):"), "\(uri): \(bad.body)")
            }
            try await h.withHistoryClient { client in
                let page = try await client.mid(.with {
                    $0.mid = 42
                    $0.epoch = epoch
                    $0.limit = 10
                })
                #expect(page.enabled && page.top == 4 && !page.complete && page.messages.map(\.offset) == [2, 3, 4])
            }

            // A push to users names them in one message (offline ones too); job writes their histories.
            let subscriber = try await h.pushSubscriber()
            #expect(try await h.post("/goim/push/mids?operation=1000&mids=42&mids=43&mids=42", "hi").status == 200)
            let (_, message) = try await subscriber.next()
            #expect(message.type == .push && message.mids == [42, 43] && message.keys.isEmpty && message.server.isEmpty)
            #expect(message.msg == Data("hi".utf8) && message.operation == 1000)
            try await subscriber.expectNothing()
        }
        // Without history.mids: the route says so; pushes to users go to their sessions' comets as goim's.
        try await LogicHarness.run { h in
            let reply = try await h.get("/goim/history/mid?mid=42")
            #expect(reply.status == 400 && reply.body.contains("keep no history"))
        }
    }

    @Test func grpcRoom() async throws {
        try await LogicHarness.run({ $0.history.rooms = ["live": HistoryLimits(size: 10, ttl: .seconds(60))] }) { h in
            let epoch = try await Self.write(h, room: "live://g", count: 3, size: 10)
            try await h.withHistoryClient { client in
                let page = try await client.room(.with {
                    $0.room = "live://g"
                    $0.since = 1
                    $0.epoch = epoch
                    $0.limit = 10
                })
                #expect(page.enabled && page.epoch == epoch && page.top == 3 && page.complete)
                #expect(page.messages.map(\.offset) == [2, 3] && page.messages.map { String(decoding: $0.body, as: UTF8.self) } == ["msg 2", "msg 3"])
                // A room without history yet gets its epoch now (a client connecting before the first message).
                let fresh = try await client.room(.with { $0.room = "live://new" })
                #expect(fresh.enabled && fresh.epoch.count == 16 && fresh.top == 0)
                let none = try await client.room(.with { $0.room = "chat://x" })
                #expect(!none.enabled && none.epoch.isEmpty)
                await #expect(throws: RPCError.self) { _ = try await client.room(.with { $0.room = "" }) }
            }
        }
    }
}
