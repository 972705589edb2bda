import Crypto
import Foundation

// What `nsc` would make for NATS decentralised (operator / JWT) authentication, made here instead: Debian packages
// nats-server but not nsc. Test-only, and only as much as nats-server needs: the encodings follow nats-io/nkeys
// (strkey.go, crc16.go) and the claims nats-io/jwt v2 (claims.go, header.go, operator_claims.go, account_claims.go,
// user_claims.go, creds_utils.go).

/// An Ed25519 key pair in NATS' NKey encoding.
struct NKey {
    /// The prefix byte of a public key; its base32 makes the key's first letter.
    enum Kind: UInt8 {
        case `operator` = 112  // 14 << 3, 'O'
        case account = 0  // 0 << 3, 'A'
        case user = 160  // 20 << 3, 'U'

        /// How creds files and nkeys name the kind.
        var name: String {
            switch self {
            case .operator: return "OPERATOR"
            case .account: return "ACCOUNT"
            case .user: return "USER"
            }
        }
    }

    let kind: Kind
    let privateKey: Curve25519.Signing.PrivateKey

    init(_ kind: Kind) {
        self.kind = kind
        self.privateKey = Curve25519.Signing.PrivateKey()
    }

    /// base32([prefix] + 32-byte public key + CRC-16), e.g. "UA…" for a user.
    var publicKey: String {
        Self.encode([kind.rawValue] + Array(privateKey.publicKey.rawRepresentation))
    }

    /// base32([seed prefix | kind >> 5, (kind & 31) << 3] + 32-byte seed + CRC-16), e.g. "SU…" for a user (`EncodeSeed`).
    var seed: String {
        let seedPrefix: UInt8 = 18 << 3  // 'S'
        return Self.encode([seedPrefix | (kind.rawValue >> 5), (kind.rawValue & 31) << 3] + Array(privateKey.rawRepresentation))
    }

    func sign(_ data: some DataProtocol) throws -> [UInt8] {
        Array(try privateKey.signature(for: data))
    }

    /// `bytes` with its CRC-16 appended (little-endian), in base32 without padding.
    private static func encode(_ bytes: [UInt8]) -> String {
        let crc = crc16(bytes)
        return base32(bytes + [UInt8(crc & 0xFF), UInt8(crc >> 8)])
    }

    /// CRC-16/XMODEM (CCITT polynomial 0x1021, initial value 0), as nkeys' table-driven crc16.
    static func crc16(_ bytes: [UInt8]) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }

    /// RFC 4648 base32, without padding.
    static func base32(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var text = ""
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                text.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { text.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return text
    }
}

/// NATS JWTs (version 2 claims, signed with the issuer's NKey) and `.creds` files.
enum NATSJWT {
    /// The operator's own JWT (self-signed), for nats-server's `operator:`.
    static func `operator`(_ key: NKey, name: String) throws -> String {
        try encode(subject: key, issuer: key, name: name, nats: Operator())
    }

    /// An account's JWT signed by its operator, with every limit unlimited as `NewAccountClaims` sets them.
    static func account(_ key: NKey, issuer: NKey, name: String) throws -> String {
        try encode(subject: key, issuer: issuer, name: name, nats: Account())
    }

    /// A user's JWT signed by its account, with no permissions set (all allowed) and unlimited subs, data and payload.
    static func user(_ key: NKey, issuer: NKey, name: String) throws -> String {
        try encode(subject: key, issuer: issuer, name: name, nats: User())
    }

    /// A `.creds` file as `nsc` writes it (`jwt.FormatUserConfig`): the decorated user JWT, then the decorated seed.
    static func credentials(jwt: String, seed: String) -> String {
        """
        -----BEGIN NATS USER JWT-----
        \(jwt)
        ------END NATS USER JWT------

        ************************* IMPORTANT *************************
        NKEY Seed printed below can be used to sign and prove identity.
        NKEYs are sensitive and should be treated as secrets.

        -----BEGIN USER NKEY SEED-----
        \(seed)
        ------END USER NKEY SEED------

        *************************************************************

        """
    }

    /// Writes the `.creds` file of `user` (its JWT issued by `account`, its seed `seed`'s) to `url`, readable by the
    /// owner only; returns its path.
    static func writeCredentials(user: NKey, account: NKey, name: String, seed: NKey? = nil, to url: URL) throws -> String {
        let text = credentials(jwt: try self.user(user, issuer: account, name: name), seed: (seed ?? user).seed)
        try Data(text.utf8).write(to: url)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: url.path)
        return url.path
    }

    // The `nats` part of each kind of claims (field names of nats-io/jwt v2).

    struct Operator: Encodable {
        var type = "operator"
        var version = 2
    }

    struct Account: Encodable {
        struct Limits: Encodable {
            var subs = -1, data = -1, payload = -1
            var imports = -1, exports = -1
            var wildcards = true
            var conn = -1, leaf = -1
        }
        var limits = Limits()
        var type = "account"
        var version = 2
    }

    struct User: Encodable {
        struct Permission: Encodable {}
        var pub = Permission()
        var sub = Permission()
        var subs = -1, data = -1, payload = -1
        var type = "user"
        var version = 2
    }

    /// The registered claims (`ClaimsData`) and the kind's `nats` part; both optional fields are left out of the jti's hash.
    struct Claims<Nats: Encodable>: Encodable {
        var jti: String?
        var iat: Int
        var iss: String
        var sub: String
        var name: String
        var nats: Nats?
    }

    static func encode<Nats: Encodable>(subject: NKey, issuer: NKey, name: String, nats: Nats) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var claims = Claims<Nats>(
            jti: nil, iat: Int(Date().timeIntervalSince1970), iss: issuer.publicKey, sub: subject.publicKey, name: name,
            nats: nil)
        // nats-io/jwt hashes the registered claims (without jti) with SHA-512/256, which swift-crypto lacks; SHA-256
        // stands in (nats-server does not recompute the jti).
        claims.jti = NKey.base32(Array(SHA256.hash(data: try encoder.encode(claims))))
        claims.nats = nats
        let header = base64URL(Array(#"{"typ":"JWT","alg":"ed25519-nkey"}"#.utf8))
        let payload = base64URL(Array(try encoder.encode(claims)))
        let signed = "\(header).\(payload)"
        return "\(signed).\(base64URL(try issuer.sign(Array(signed.utf8))))"
    }

    /// base64url without padding (RFC 4648 §5), as JWTs use.
    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
