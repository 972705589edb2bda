import Foundation
import GoIMClient
import GoIMProtocol
import JWTKit
import NIOCore
import StackHarness
import Testing

extension StackTests {
    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var key: String
        var room_id: String

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static let jwtSecret = "stack-tests-jwt-secret-0123456789abcdef"

    static func token(mid: Int64, key: String, expiresIn seconds: TimeInterval) async throws -> ByteBuffer {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: jwtSecret), digestAlgorithm: .sha256)
        let claims = Claims(
            sub: SubjectClaim(value: "\(mid)"), exp: ExpirationClaim(value: Date().addingTimeInterval(seconds)), key: key,
            room_id: "live://jwt")
        return ByteBuffer(string: try await keys.sign(claims))
    }

    @Test("jwt mode: a connection closes when its token expires; op 18 with a fresh token keeps it open until the new exp")
    func credentialLifetime() async throws {
        var options = Stack.Options()
        options.logicEnvironment = ["GOIM_AUTH_MODE": "jwt", "GOIM_AUTH_JWTSECRET": Self.jwtSecret]
        try await Stack.run(options) { stack in
            let port = stack.comets[0].tcpPort
            // Two clients whose tokens expire in 3 s; one refreshes to 30 s (a loaded CI machine may take seconds per step).
            let lapsing = try await GoIMClient.connect(port: port, transport: .tcp)
            let refreshing = try await GoIMClient.connect(port: port, transport: .tcp)
            defer { Task { await lapsing.close(); await refreshing.close() } }
            try await lapsing.auth(token: try await Self.token(mid: 31, key: "jwt-lapsing", expiresIn: 3))
            try await refreshing.auth(token: try await Self.token(mid: 32, key: "jwt-refreshing", expiresIn: 3))
            let started = ContinuousClock.now

            // A token for another member is refused, and changes nothing.
            let refused = try await refreshing.refreshToken(try await Self.token(mid: 31, key: "jwt-refreshing", expiresIn: 60))
            #expect(String(buffer: refused.body).hasPrefix(#"{"code":-401,"message":"authentication failed: the new token is for member 31"#))
            let reply = try await refreshing.refreshToken(try await Self.token(mid: 32, key: "jwt-refreshing", expiresIn: 30), sequence: 2)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(reply.body.readableBytesView)) as? [String: Any])
            #expect(json["code"] as? Int == 0 && (json["expires_at"] as? Int ?? 0) > Int(Date().timeIntervalSince1970) + 4)

            // The lapsing client is closed at its exp (the comet's sweep runs every second), the other lives on.
            try await lapsing.waitUntilClosed(timeout: .seconds(15))
            #expect(ContinuousClock.now - started >= .seconds(2))
            #expect(try await refreshing.heartbeat() >= 1)
            // Awaited before the push: the push can reach the client before the HTTP reply reaches the test.
            let pushed = try await refreshing.expect(Operation(1000), timeout: .seconds(10))
            try await stack.push("/goim/push/room?operation=1000&type=live&room=jwt", "after-first-expiry")
            #expect(String(buffer: try await pushed.value().body) == "after-first-expiry")
            // A refresh may also shorten the life: a 2 s token, and the connection closes at its exp.
            let shortened = ContinuousClock.now
            let short = try await refreshing.refreshToken(try await Self.token(mid: 32, key: "jwt-refreshing", expiresIn: 2), sequence: 3)
            #expect(String(buffer: short.body).hasPrefix(#"{"code":0,"expires_at":"#))
            try await refreshing.waitUntilClosed(timeout: .seconds(15))
            #expect(ContinuousClock.now - shortened >= .milliseconds(900))
        }
    }
}
