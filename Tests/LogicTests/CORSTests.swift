import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@testable import Logic

/// `httpServer.corsOrigins`: pages of listed origins may call the HTTP API from a browser (the demo's send box).
@Suite("HTTP API CORS", .startsServers)
struct CORSTests {
    static let page = "http://127.0.0.1:1999"

    func request(
        _ h: LogicHarness, _ method: HTTPRequest.Method, _ uri: String, _ headers: HTTPFields, body: String? = nil
    ) async throws -> TestClient.Response {
        try await TestClient.withClient(host: "127.0.0.1", port: h.httpPort) { client in
            try await client.execute(
                TestClient.Request(uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }))
        }
    }

    @Test("a listed origin gets Access-Control-Allow-Origin on every reply and a preflight answer; others get nothing")
    func listedOrigin() async throws {
        try await LogicHarness.run({ $0.httpServer.corsOrigins = [Self.page, "https://example.org"] }) { h in
            var reply = try await request(h, .post, "/goim/push/all?operation=1000", [.origin: Self.page], body: "x")
            #expect(reply.body.map { String(buffer: $0) } == #"{"code":0,"message":""}"#)
            #expect(reply.headers[.accessControlAllowOrigin] == Self.page)
            #expect(reply.headers[.vary] == "Origin")

            // error envelopes carry it too, so the page can show the message
            reply = try await request(h, .post, "/goim/push/room?type=live&room=1", [.origin: Self.page], body: "x")
            #expect(reply.status.code == 400)
            #expect(reply.headers[.accessControlAllowOrigin] == Self.page)

            reply = try await request(
                h, .options, "/goim/push/room",
                [.origin: Self.page, .accessControlRequestMethod: "POST", .accessControlRequestHeaders: "authorization"])
            #expect(reply.status.code == 204)
            #expect(reply.headers[.accessControlAllowOrigin] == Self.page)
            #expect(reply.headers[.accessControlAllowMethods] == "POST, OPTIONS")
            #expect(reply.headers[.accessControlAllowHeaders] == "Authorization, Content-Type")
            #expect(reply.headers[.accessControlMaxAge] == "600")

            reply = try await request(h, .options, "/goim/online/room", [.origin: "HTTPS://EXAMPLE.ORG"])
            #expect(reply.status.code == 204)
            #expect(reply.headers[.accessControlAllowMethods] == "GET, OPTIONS")

            // an origin not listed, a request without Origin, an unknown route: as without CORS
            reply = try await request(h, .post, "/goim/push/all?operation=1000", [.origin: "http://evil.example"], body: "x")
            #expect(reply.headers[.accessControlAllowOrigin] == nil)
            reply = try await request(h, .options, "/goim/push/room", [.origin: "http://evil.example"])
            #expect(reply.status.code == 404)
            reply = try await request(h, .get, "/goim/online/total", [:])
            #expect(reply.headers[.accessControlAllowOrigin] == nil)
            reply = try await request(h, .options, "/nope", [.origin: Self.page])
            #expect(reply.status.code == 404)
        }
    }

    @Test("\"*\" allows any origin without Vary; no corsOrigins (the default) sends no CORS headers, as goim")
    func anyOriginAndOff() async throws {
        try await LogicHarness.run({ $0.httpServer.corsOrigins = ["*"] }) { h in
            let reply = try await request(h, .get, "/goim/online/total", [.origin: "http://anywhere.example"])
            #expect(reply.headers[.accessControlAllowOrigin] == "*")
            #expect(reply.headers[.vary] == nil)
            let preflight = try await request(h, .options, "/goim/push/mids", [.origin: "http://anywhere.example"])
            #expect(preflight.status.code == 204)
            #expect(preflight.headers[.accessControlAllowOrigin] == "*")
        }
        try await LogicHarness.run { h in
            let reply = try await request(h, .post, "/goim/push/all?operation=1000", [.origin: Self.page], body: "x")
            #expect(reply.headers[.accessControlAllowOrigin] == nil)
            #expect(try await request(h, .options, "/goim/push/all", [.origin: Self.page]).status.code == 404)
        }
    }
}
