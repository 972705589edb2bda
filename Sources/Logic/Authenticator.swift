import Crypto
import Foundation
import GoIMConfig
import GoIMProtocol
import JWTKit

/// Turns the auth body a comet forwards in `Connect` (the client's op 7 body) into the session's identity.
/// Throws `LogicError.authenticationFailed` with a reason a person understands.
public protocol Authenticator: Sendable {
    func authenticate(token: [UInt8], cookie: String) async throws -> Credential
    /// Whether the auth body names the user without proving it (goim's mode): then a key that is already connected
    /// is only taken over by the same user id (`LogicCore.connect`).
    var identityIsClaimed: Bool { get }
}

/// Who a verified auth body says the client is, and until when.
public struct Credential: Sendable, Equatable {
    public var body: AuthBody
    /// Unix seconds after which the connection must not live on without a refreshed token; 0 = never (goim mode).
    public var expiresAt: Int64

    public init(body: AuthBody, expiresAt: Int64 = 0) {
        self.body = body
        self.expiresAt = expiresAt
    }
}

/// goim's behaviour: the body is JSON `{"mid","key","room_id","platform","accepts"}`, no credential check.
public struct GoIMAuthenticator: Authenticator {
    public init() {}

    public var identityIsClaimed: Bool { true }

    public func authenticate(token: [UInt8], cookie: String) async throws -> Credential {
        do {
            return Credential(body: try AuthBody.decode(token))
        } catch {
            throw LogicError.authenticationFailed(error.description)
        }
    }
}

/// `auth.mode = "jwt"`: the body is a signed JWT, either raw or as the `"token"` field of a JSON object
/// (e.g. `{"token":"eyJ..."}`; other fields of that object are ignored). HS256 or RS256. The token must carry
/// `exp`; `nbf`, `iss` and `aud` are checked when present or configured. The session comes from the claims:
/// `mid` (number or decimal string; else a decimal `sub`), `key`, `room_id`, `platform`, `accepts`.
public struct JWTAuthenticator: Authenticator {
    public let algorithm: String
    public let issuer: String
    public let audience: String
    let keys: JWTKeyCollection

    private init(algorithm: String, issuer: String, audience: String, keys: JWTKeyCollection) {
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
    }

    /// HS256 with a shared secret of at least 32 bytes (RFC 7518 §3.2: a key as large as the hash output).
    public static func hs256(secret: String, issuer: String = "", audience: String = "") async throws -> JWTAuthenticator {
        guard secret.utf8.count >= 32 else {
            throw LogicStartError("auth.jwtSecret: an HS256 secret must be at least 32 bytes (it has \(secret.utf8.count))")
        }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return JWTAuthenticator(algorithm: "HS256", issuer: issuer, audience: audience, keys: keys)
    }

    /// RS256 with a PEM public key (`-----BEGIN PUBLIC KEY-----`).
    public static func rs256(publicKeyPEM: String, issuer: String = "", audience: String = "") async throws -> JWTAuthenticator {
        let key = try Insecure.RSA.PublicKey(pem: publicKeyPEM)
        let keys = JWTKeyCollection()
        await keys.add(rsa: key, digestAlgorithm: .sha256)
        return JWTAuthenticator(algorithm: "RS256", issuer: issuer, audience: audience, keys: keys)
    }

    /// Every key of a JWKS document (`{"keys":[...]}`), found by the token's `kid`: an issuer rotating its keys
    /// publishes the new one beside the old until the old one's tokens have expired.
    public static func jwks(_ json: String, algorithm: String, issuer: String = "", audience: String = "") async throws -> JWTAuthenticator {
        let keys = JWTKeyCollection()
        try await keys.add(jwksJSON: json)
        return JWTAuthenticator(algorithm: algorithm, issuer: issuer, audience: audience, keys: keys)
    }

    /// The authenticator `[auth]` asks for: goim's, or a JWT one (reading the RS256 key file or the JWKS file).
    public static func make(_ configuration: LogicConfiguration.Auth) async throws -> any Authenticator {
        guard configuration.mode == "jwt" else { return GoIMAuthenticator() }
        if !configuration.jwksFile.isEmpty {
            let json = try readKeyFile(configuration.jwksFile, key: "auth.jwksFile")
            do {
                return try await jwks(
                    json, algorithm: configuration.jwtAlgorithm, issuer: configuration.jwtIssuer, audience: configuration.jwtAudience)
            } catch {
                throw LogicStartError("auth.jwksFile: \(configuration.jwksFile) is not a usable JWKS document: \(error)")
            }
        }
        switch configuration.jwtAlgorithm {
        case "RS256":
            let pem = try readKeyFile(configuration.jwtPublicKeyFile, key: "auth.jwtPublicKeyFile")
            do {
                return try await rs256(publicKeyPEM: pem, issuer: configuration.jwtIssuer, audience: configuration.jwtAudience)
            } catch {
                throw LogicStartError("auth.jwtPublicKeyFile: \(configuration.jwtPublicKeyFile) is not a PEM RSA public key: \(error)")
            }
        default:
            return try await hs256(secret: configuration.jwtSecret, issuer: configuration.jwtIssuer, audience: configuration.jwtAudience)
        }
    }

    private static func readKeyFile(_ path: String, key: String) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LogicStartError("\(key): cannot read \(path): \(error.localizedDescription)")
        }
    }

    public var identityIsClaimed: Bool { false }

    public func authenticate(token body: [UInt8], cookie: String) async throws -> Credential {
        let token = try Self.extractToken(body)
        try checkHeader(token)
        let claims: Claims
        do {
            claims = try await keys.verify(token, as: Claims.self)
        } catch let error as JWTError {
            throw LogicError.authenticationFailed(Self.reason(error))
        } catch let error as LogicError {
            throw error
        } catch {
            throw LogicError.authenticationFailed("JWT rejected: \(error)")
        }
        if !issuer.isEmpty && claims.iss?.value != issuer {
            throw LogicError.authenticationFailed("JWT issuer \(claims.iss.map { "\"\($0.value)\"" } ?? "missing") is not \"\(issuer)\"")
        }
        if !audience.isEmpty && !(claims.aud?.value.contains(audience) ?? false) {
            throw LogicError.authenticationFailed("JWT audience does not include \"\(audience)\"")
        }
        var body = AuthBody()
        if let mid = claims.mid {
            body.mid = mid.value
        } else if let sub = claims.sub?.value, let mid = Int64(sub) {
            body.mid = mid
        }
        body.key = claims.key ?? ""
        body.roomID = claims.roomID ?? ""
        body.platform = claims.platform ?? ""
        body.accepts = claims.accepts ?? []
        // `verify` made sure `exp` is there.
        let expiresAt = claims.exp.map { Int64($0.value.timeIntervalSince1970.rounded(.down)) } ?? 0
        return Credential(body: body, expiresAt: expiresAt)
    }

    /// The raw JWT, or the `token` field of a JSON object.
    static func extractToken(_ body: [UInt8]) throws -> String {
        let text = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("{") else {
            guard !text.isEmpty else { throw LogicError.authenticationFailed("empty auth body: a JWT is required") }
            return text
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw LogicError.authenticationFailed("auth body is neither a JWT nor a JSON object")
        }
        guard let token = object["token"] as? String, !token.isEmpty else {
            throw LogicError.authenticationFailed("auth body has no \"token\" field holding a JWT")
        }
        return token
    }

    /// Refuses a token signed with another algorithm than the configured one, with a clear reason.
    private func checkHeader(_ token: String) throws {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw LogicError.authenticationFailed("malformed JWT: expected three dot-separated parts") }
        var base64 = parts[0].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64),
            let header = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw LogicError.authenticationFailed("malformed JWT: the header is not base64url JSON") }
        let alg = header["alg"] as? String ?? "none"
        guard alg == algorithm else {
            throw LogicError.authenticationFailed("JWT is signed with \(alg), expected \(algorithm)")
        }
    }

    static func reason(_ error: JWTError) -> String {
        switch error.errorType {
        case .claimVerificationFailure:
            if error.failedClaim is ExpirationClaim { return "JWT expired" }
            if error.failedClaim is NotBeforeClaim { return "JWT not valid yet (nbf)" }
            return "JWT claim rejected: \(error.reason ?? "invalid")"
        case .signatureVerificationFailed:
            return "JWT signature is invalid"
        case .malformedToken:
            return "malformed JWT: \(error.reason ?? "")"
        default:
            return "JWT rejected: \(error.reason ?? "\(error.errorType)")"
        }
    }

    /// The claims read from a token.
    struct Claims: JWTPayload {
        var sub: SubjectClaim?
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var mid: FlexibleInt64?
        var key: String?
        var roomID: String?
        var platform: String?
        var accepts: [Int32]?

        enum CodingKeys: String, CodingKey {
            case sub, exp, nbf, iss, aud, mid, key, roomID = "room_id", platform, accepts
        }

        func verify(using algorithm: some JWTAlgorithm) async throws {
            guard let exp else { throw LogicError.authenticationFailed("JWT has no exp claim: tokens must expire") }
            try exp.verifyNotExpired()
            try nbf?.verifyNotBefore()
        }
    }

    /// A member id written as a JSON number or a decimal string.
    struct FlexibleInt64: Codable, Sendable {
        var value: Int64

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let number = try? container.decode(Int64.self) {
                value = number
            } else if let text = try? container.decode(String.self), let number = Int64(text) {
                value = number
            } else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "mid must be an integer or a decimal string")
            }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(value)
        }
    }
}

/// A problem that stops Logic from starting (bad key file, listener cannot bind, ...).
public struct LogicStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
