import Crypto
import Foundation
import GRPCCore
import GoIMConfig
import GoIMRPC
import JWTKit
import Testing

@testable import Logic

/// `auth.mode = "jwt"`: HS256 and RS256 accepted; expired, badly signed or wrongly signed tokens refused
/// with a clear reason.
@Suite("JWT authentication", .startsServers)
struct JWTTests {
    struct Payload: JWTPayload {
        var sub: SubjectClaim?
        var exp: ExpirationClaim?
        var mid: Int64?
        var key: String?
        var room_id: String?
        var accepts: [Int32]?
        var iss: IssuerClaim?

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static let secret = "0123456789abcdef0123456789abcdef-goim"

    static let rsaPrivateKey = """
        -----BEGIN PRIVATE KEY-----
        MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCj3phVbN5KV341
        +F7YdVjKVM8beB5GCK4T6dkvZTb4US4JnOPZo+ZbpLG4q7/FayQeLv0G/bPxCxQu
        KC3CInhUBneQej+J7cIsePx/QnAk1ZCTx7cggJVTQsxrmjh+9znszESP+e3Aj8qe
        QI3ZDAi1Rb/3/PwP+pHRKNthoJ/RhM89fp3eC+Wn09ztcA3LQzgdujKV+hxlbk13
        RPvD3D3wXP/IKqVTKVXIvHimVi7hCqAq/iQea8xeHeb+M/vomYr0928D6VhZ+804
        yauW/xqPRJyZ8spsS0OToONjOux+hMvPn9OZqX6ai0ukJe4IkUSdZvPgyTXKlgnd
        y4ihZADfAgMBAAECggEAAYTdNaGCN/8yoM5yFqCT16BMoS0OXsjS0EVxKXLPPSMH
        gbhOFmTiDERtD1CsQOi613rJBqkQY3IeWEUwE2YdZm3+6rxvXVhyXdYrRQS5JGZE
        ZlJKHMeEWta6LV8rGeYxx8Om+QywiwHqN2hSyEnHxOJmIqbaMU25z04JJpEGGjuU
        odkMXjTtNn0USqkX9W4S0m5HrPFh/DAdivr1QE9SScOJxlVuHbZzkRI95k6iMkvT
        hs3CDNBbDKaznvNhXC58xncdgMSwqDt98w9Wq7beIMLGWCZ3VaqXDN2GSlX22YAg
        GA8Ez1T3dpQll4eULqtiqFd3GuWslfDKRZNBwMdbVQKBgQDRvxkbFzkqPqPGla1p
        x48+iC+VRth2dIS0GWAU8Mt36kp2RNxbUBO8mGka13noSUs8q86lj7U5o3SwOA7A
        m87aSO8PFdX4fziQRMFt5ftHW3CYHEzJOZko9QOtx9ba1eaqdpOuDm5kjkid9I54
        uo+iLA31Xws/B7nQwWJ04APxPQKBgQDIAZYXbE8UJrHCmBJyEZh6Ud0p9mb/q1ba
        2qC/hX9Zej223gfvxb4KUyv6VlOHuoDitF9igQ60BEzQGV8LBg+baUl+h84V7oFs
        VrqbOESThFs+CxuU17SKhRaBuneV/iwaG0PTpQfHA11di7NkWBdo03tcU3st6oYr
        DQRvZQrkSwKBgQCLOm3A5N6GY0Q1uv98uwIkASSM05U2tEuufTWhUOHPPM+myDj5
        yCMByq3iKmx6u8RchrNKhSVIGG+J1fw88HATx9wgSF9bb5+tbGZ1u/bbvB/2aLqz
        zC8V1+ZUQdYmN1zBhKqtHFk9GJGtgDveegCEJvgxC6EcetVmdCgV6unTBQKBgA8N
        94M51tX4d6bjFXhalLSYVuJitqwF9JqynCjuXoCYr+6E1eoZY02ZpxTHzK/JvQvT
        cd6TQk0QicucLUhCI4iaKzsH8944vqst+AvY92h3LPsFkQTqG5/VlrUbGQdEQ4OP
        i9JxeJ1lRnDVJCKoctKkIIP5kKsLHSA+cZgE7gXzAoGABGg7rSF3oHtKgsh/JMPR
        wDzNOdPy3ZS7OICD0DDygRoutkR189MJYLNjD/nMNyroNnDi+G3HQl0vC/m6rWUA
        cMmTyNYwQN399Eg8pLQEExZJjWRtGsgn7p/z4+F6KifBm7uMSTxjatXy7y8Z/xCy
        opuorU1SnA1GMZP2++NBvKg=
        -----END PRIVATE KEY-----
        """
    static let rsaPublicKey = """
        -----BEGIN PUBLIC KEY-----
        MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAo96YVWzeSld+Nfhe2HVY
        ylTPG3geRgiuE+nZL2U2+FEuCZzj2aPmW6SxuKu/xWskHi79Bv2z8QsULigtwiJ4
        VAZ3kHo/ie3CLHj8f0JwJNWQk8e3IICVU0LMa5o4fvc57MxEj/ntwI/KnkCN2QwI
        tUW/9/z8D/qR0SjbYaCf0YTPPX6d3gvlp9Pc7XANy0M4HboylfocZW5Nd0T7w9w9
        8Fz/yCqlUylVyLx4plYu4QqgKv4kHmvMXh3m/jP76JmK9PdvA+lYWfvNOMmrlv8a
        j0ScmfLKbEtDk6DjYzrsfoTLz5/Tmal+motLpCXuCJFEnWbz4Mk1ypYJ3cuIoWQA
        3wIDAQAB
        -----END PUBLIC KEY-----
        """
    static let otherPrivateKey = """
        -----BEGIN PRIVATE KEY-----
        MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCrBXXZiwP6uqLQ
        0fOpdWsruIdxsBUqOGRWvJlnwBL5MaU/m2sxJ48h2Uai8KX+r6bRiNOipP1veH1X
        pF5mDe94MYohOAYAC3QE80bWoAsbDFTh9YztekkUAxHHM7eLgcATavrGZPeH/fJ3
        MIg6BR0PwriaG13exCJ9N7uaBhgGsLUTxYtxbZ6reb/NZigriluSMJb3B+t/wvEv
        rPXFeeynt/2IKspt4F60YkgOjubA9Z6qPzjnyDXObfPiHD8XKp92WFTJMxnASAwa
        L9xT0mouMZbIAFml9d7OB+ZVNxFKweiAg3Z0DBAVpmmsoWMY/Ea697/g9okZa1ld
        8Ca62zEdAgMBAAECggEAVIAyriXjdffQqcgLElBLf0NCXRiJJJ7PaRHv5FUBqvHu
        OeLzkEqBDNL79VddVV152e82zpaiCHlqySqUX+2DxIoJu4cgY9ZE4YtIlZRnWFp7
        +Feo5c+1mvc3SgtSJdKa0p1ZwjwyGBYQPvcSYESViuuF5dMeywpzFha7EYvwRCEt
        rPrmW4QQM4/PPyatZMB+G0mCUMpahqNGLSn2kvfvUOKM/7HUtShofcDuWQIekl0M
        TZXSynHB2XN/rSIOQkrVx7Qh9wLYCSoIaAMRrdff5nVsLD0fieYuct/2ZoIqLTyI
        FzSEUe9Y0d/8lrm/qISiwAJIEo1F0oulMPeG0wRbiwKBgQDaA4B+HbRILnTaZLXc
        VEhR3WD8Zb3Tc40Ula/OBHgPHnsGWCL/M7fXruqnpS6UIdyuK81TJLKtYOJt70qF
        i8NZwSujRK2ZHbjKUzKLJ/lRhlBKP/DJDLU697kkcGLjYzdj5tWsDEd1hrIJh71Y
        Pi50mNCEPada2MoUaPWRCASUDwKBgQDI0d134J/zZY8I5/O5WhJCuWtJc8KXQli6
        QGRV1UgQ8ND9Yj/FcrseXB1q0axQ7QL2zjyUArKE3V57sZdNWgP0rGlogsmmUFDH
        /SfscN1jIBOXH/mu+OwTzUap53L1+t95eZy/5iPaqRGdgcDEkw6XK9NgRD5v8lv+
        TWksCbSMEwKBgQDGkrv9ozarLE1ZArQ2zDnW/wowusbtC2msHy8zOhTUyJGL1MmD
        o2rHNFYdfrHvUOx9Y/4vxdRNYVq8gWFiREwZu33wx0RLm6vN9XurDizj2a/WAWli
        5oVIAY0MKKWZsawo/X8Pp1uLK7WMQqvu7SxJHUuHt9RwRdfCQVuyzxfEdwKBgE7d
        I/U08Hu8cXyU4sDyn2M2v+xbmpqeQov6R6zxklicyeYIFHUtBlD46dCOQPaS7WwR
        N/cETCkjajx3VKza4dzPbKHPYvN+bQrs3yXaeQa5jRf3Ra2yMbvhDJQiwaHaALMK
        0EUIUyJG7RUG5LYN7lftrRgMFN0Pt5LZwai6sv2jAoGAOof0sn4aXQ8X1azIvJxz
        6taFQMjkPZlOjqLJ7J9LwpVISkX+PpN/rQ/IS/dM7s1TEXTjrHorydMkuqIr/g+a
        5YsBgBlMVPthRU1Aaw/CTMD5BtlaFL8VEbMS5PhhSdpTv9HMAHVZjGpT+Xl5rrvg
        AVY0/Ksf2VCdcuRTxcS24eg=
        -----END PRIVATE KEY-----
        """

    static func payload(expiresIn seconds: TimeInterval? = 600) -> Payload {
        Payload(
            sub: "123", exp: seconds.map { ExpirationClaim(value: Date().addingTimeInterval($0)) }, key: "jwt-key",
            room_id: "live://1000", accepts: [1000, 1001])
    }

    static func hs256(_ payload: Payload, secret: String = Self.secret) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(payload)
    }

    static func rs256(_ payload: Payload, privateKey: String = rsaPrivateKey) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(rsa: try Insecure.RSA.PrivateKey(pem: privateKey), digestAlgorithm: .sha256)
        return try await keys.sign(payload)
    }

    static func refusal(_ authenticator: any Authenticator, _ token: String) async -> String? {
        do {
            _ = try await authenticator.authenticate(token: Array(token.utf8), cookie: "")
            return nil
        } catch let error as LogicError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    @Test("HS256: raw token or a JSON token field; mid from sub, room, accepts and key from claims")
    func hs256Accepted() async throws {
        let authenticator = try await JWTAuthenticator.hs256(secret: Self.secret)
        let token = try await Self.hs256(Self.payload())
        for body in [token, #"{"token":"\#(token)","platform":"web"}"#] {
            let credential = try await authenticator.authenticate(token: Array(body.utf8), cookie: "")
            let session = credential.body
            #expect(abs(credential.expiresAt - Int64(Date().timeIntervalSince1970) - 600) <= 2)
            #expect(session.mid == 123)
            #expect(session.key == "jwt-key")
            #expect(session.roomID == "live://1000")
            #expect(session.accepts == [1000, 1001])
        }
        var withMid = Self.payload()
        withMid.mid = 9
        withMid.sub = "not-a-number"
        let session = try await authenticator.authenticate(token: Array(try await Self.hs256(withMid).utf8), cookie: "").body
        #expect(session.mid == 9)
    }

    @Test("HS256 refusals: expired, bad signature, no exp, wrong algorithm, not a JWT")
    func hs256Refused() async throws {
        let authenticator = try await JWTAuthenticator.hs256(secret: Self.secret)
        #expect(await Self.refusal(authenticator, try await Self.hs256(Self.payload(expiresIn: -60))) == "authentication failed: JWT expired")
        #expect(
            await Self.refusal(authenticator, try await Self.hs256(Self.payload(), secret: String(repeating: "o", count: 32)))
                == "authentication failed: JWT signature is invalid")
        #expect(
            await Self.refusal(authenticator, try await Self.hs256(Self.payload(expiresIn: nil)))
                == "authentication failed: JWT has no exp claim: tokens must expire")
        #expect(
            await Self.refusal(authenticator, try await Self.rs256(Self.payload()))
                == "authentication failed: JWT is signed with RS256, expected HS256")
        #expect(await Self.refusal(authenticator, "hello") == "authentication failed: malformed JWT: expected three dot-separated parts")
        #expect(
            await Self.refusal(authenticator, #"{"mid":1}"#) == #"authentication failed: auth body has no "token" field holding a JWT"#)
    }

    @Test("an HS256 secret shorter than 32 bytes is refused at start")
    func shortSecret() async {
        let error = await #expect(throws: LogicStartError.self) { try await JWTAuthenticator.hs256(secret: "short") }
        #expect(error?.description == "auth.jwtSecret: an HS256 secret must be at least 32 bytes (it has 5)")
    }

    @Test("RS256 with a PEM public key: accepted, and refused when signed by another key or with HS256")
    func rs256() async throws {
        let authenticator = try await JWTAuthenticator.rs256(publicKeyPEM: Self.rsaPublicKey, issuer: "goim-tests")
        var payload = Self.payload()
        payload.iss = "goim-tests"
        let session = try await authenticator.authenticate(token: Array(try await Self.rs256(payload).utf8), cookie: "").body
        #expect(session.mid == 123 && session.roomID == "live://1000")
        #expect(
            await Self.refusal(authenticator, try await Self.rs256(payload, privateKey: Self.otherPrivateKey))
                == "authentication failed: JWT signature is invalid")
        #expect(
            await Self.refusal(authenticator, try await Self.hs256(payload))
                == "authentication failed: JWT is signed with HS256, expected RS256")
        #expect(
            await Self.refusal(authenticator, try await Self.rs256(Self.payload()))
                == #"authentication failed: JWT issuer missing is not "goim-tests""#)
    }

    @Test("Connect in jwt mode (RS256 key file from the config) stores the session from the claims")
    func connectWithJWT() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jwt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let keyFile = directory.appendingPathComponent("public.pem")
        try Self.rsaPublicKey.write(to: keyFile, atomically: true, encoding: .utf8)
        try await LogicHarness.run({
            $0.auth.mode = "jwt"
            $0.auth.jwtAlgorithm = "RS256"
            $0.auth.jwtPublicKeyFile = keyFile.path
        }) { h in
            let a = h.comet("a")
            let token = try await Self.rs256(Self.payload())
            let reply = try await h.withLogicClient { client in
                try await client.connect(RPCTests.connectRequest(server: a, token))
            }
            #expect(reply.mid == 123 && reply.key == "jwt-key" && reply.roomID == "live://1000" && reply.accepts == [1000, 1001])
            #expect(try await h.command("HGET", "mid_123", "jwt-key").string == a)

            let expired = try await Self.rs256(Self.payload(expiresIn: -1))
            let error = await #expect(throws: RPCError.self) {
                _ = try await h.withLogicClient { client in try await client.connect(RPCTests.connectRequest(server: a, expired)) }
            }
            #expect(error?.code == .unauthenticated)
            #expect(error?.message == "authentication failed: JWT expired")
            // goim's JSON body is not a JWT
            await #expect(throws: RPCError.self) {
                _ = try await h.withLogicClient { client in
                    try await client.connect(RPCTests.connectRequest(server: a, #"{"mid":1,"key":"x"}"#))
                }
            }
        }
    }

    @Test("jwt mode: ConnectReply carries the token's exp; RefreshToken accepts a fresh token of the same member and refuses others")
    func expiryAndRefresh() async throws {
        try await LogicHarness.run({
            $0.auth.mode = "jwt"
            $0.auth.jwtSecret = Self.secret
        }) { h in
            let a = h.comet("a")
            let token = try await Self.hs256(Self.payload(expiresIn: 60))
            let reply = try await h.withLogicClient { client in
                try await client.connect(RPCTests.connectRequest(server: a, token))
            }
            #expect(abs(reply.expiresAt - Int64(Date().timeIntervalSince1970) - 60) <= 2)

            func refresh(mid: Int64 = 123, key: String = "jwt-key", _ token: String) async throws -> Int64 {
                var request = Swiftgoim_Logic_RefreshTokenReq()
                request.mid = mid
                request.key = key
                request.server = a
                request.token = Data(token.utf8)
                return try await h.withSessionClient { try await $0.refreshToken(request) }.expiresAt
            }
            let fresh = try await Self.hs256(Self.payload(expiresIn: 3600))
            #expect(abs(try await refresh(fresh) - Int64(Date().timeIntervalSince1970) - 3600) <= 2)
            #expect(abs(try await refresh(#"{"token":"\#(fresh)"}"#) - Int64(Date().timeIntervalSince1970) - 3600) <= 2)

            var refusals: [String] = []
            for (mid, key, token) in [
                (Int64(124), "jwt-key", fresh),  // another member's connection
                (123, "other-key", fresh),  // the token names another key
                (123, "jwt-key", try await Self.hs256(Self.payload(expiresIn: -5))),  // expired
                (123, "jwt-key", try await Self.hs256(Self.payload(), secret: String(repeating: "x", count: 32))),  // forged
            ] {
                do {
                    _ = try await refresh(mid: mid, key: key, token)
                    refusals.append("accepted")
                } catch let error as RPCError {
                    #expect(error.code == .unauthenticated)
                    refusals.append(error.message)
                }
            }
            #expect(refusals == [
                "authentication failed: the new token is for member 123, the connection is member 124",
                #"authentication failed: the new token names key "jwt-key", the connection is "other-key""#,
                "authentication failed: JWT expired",
                "authentication failed: JWT signature is invalid",
            ])
        }
    }

    /// A JWKS document with the RSA public keys of `privateKeys`, each under its `kid`.
    static func jwks(_ privateKeys: [(kid: String, pem: String)]) throws -> String {
        func base64URL(_ data: Data) -> String {
            data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let keys = try privateKeys.map { entry -> String in
            let primitives = try Insecure.RSA.PrivateKey(pem: entry.pem).publicKey.getKeyPrimitives()
            return #"{"kty":"RSA","alg":"RS256","use":"sig","kid":"\#(entry.kid)","n":"\#(base64URL(primitives.modulus))","e":"\#(base64URL(primitives.publicExponent))"}"#
        }
        return #"{"keys":[\#(keys.joined(separator: ","))]}"#
    }

    static func rs256(_ payload: Payload, privateKey: String, kid: String) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(rsa: try Insecure.RSA.PrivateKey(pem: privateKey), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        return try await keys.sign(payload, kid: JWKIdentifier(string: kid))
    }

    /// A second RSA key, made with openssl.
    static func generatedRSAKey() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jwt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("key.pem")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", file.path]
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return try String(contentsOf: file, encoding: .utf8)
    }

    @Test("JWKS (auth.jwksFile): tokens signed with any listed key verify by kid, so keys rotate; unknown kids and mismatched keys are refused")
    func jwksRotation() async throws {
        let newKey = try Self.generatedRSAKey()
        let json = try Self.jwks([("old", Self.rsaPrivateKey), ("new", newKey)])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jwks-\(UUID().uuidString).json")
        try json.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        var configuration = LogicConfiguration.Auth()
        configuration.mode = "jwt"
        configuration.jwtAlgorithm = "RS256"
        configuration.jwksFile = file.path
        let authenticator = try await JWTAuthenticator.make(configuration)

        for (kid, key) in [("old", Self.rsaPrivateKey), ("new", newKey)] {
            let token = try await Self.rs256(Self.payload(), privateKey: key, kid: kid)
            let body = try await authenticator.authenticate(token: Array(token.utf8), cookie: "").body
            #expect(body.mid == 123)
        }
        // Signed with the new key but claiming to be the old one: the old key's signature check fails.
        let mislabelled = try await Self.rs256(Self.payload(), privateKey: newKey, kid: "old")
        let refusal = await Self.refusal(authenticator, mislabelled)
        #expect(refusal?.contains("signature") == true, "\(refusal ?? "accepted")")
        // A retired key is simply gone from the file.
        let retired = try await Self.rs256(Self.payload(), privateKey: newKey, kid: "retired")
        #expect(await Self.refusal(authenticator, retired) != nil)
        // An unreadable file stops logic at start with the key named.
        configuration.jwksFile = "/nonexistent/jwks.json"
        await #expect {
            _ = try await JWTAuthenticator.make(configuration)
        } throws: { "\($0)".contains("auth.jwksFile") }
    }
}
