import Primitives

/// Everything `logic` reads from `configs/logic.toml` (goim's section and key names where goim has them).
public struct LogicConfiguration: Sendable, Equatable {
    public struct HTTPServer: Sendable, Equatable {
        /// Loopback by default: other machines reach it only with a push token (or explicitly allowed without).
        public var addr: HostPort = HostPort(host: "127.0.0.1", port: 3111)
        /// Largest push body accepted (goim had no limit); larger gets code -400.
        public var maxBodySize: Int = 1 << 20
        /// When set, `/goim/push/*` requires `Authorization: Bearer <token>`. Required when `addr` is not loopback,
        /// unless `allowUnauthenticatedPush`.
        public var pushToken: String = ""
        /// Serve `/goim/push/*` without a token on a non-loopback address (goim's behaviour); warned at each start.
        public var allowUnauthenticatedPush: Bool = false
        /// Requests per second one client IP may make (a token bucket of `rateBurst`); loopback clients are not
        /// limited; 0 = no limit. Over it: HTTP 429, code -429, `Retry-After`.
        public var rateLimit: Double = 1000
        public var rateBurst: Int = 2000
        /// Requests handled at once (all clients); over it: HTTP 429 at once. 0 = no cap.
        public var maxConcurrentRequests: Int = 4096
        /// A connection that sends nothing for this long is closed (goim had none: idle and half-sent requests held
        /// sockets forever).
        public var idleTimeout: Duration = .seconds(60)
        /// Browser origins (`http://host:port`) allowed to call the API from a page (CORS), or `*` for any;
        /// empty (the default, as goim): no CORS headers, so pages of other origins cannot read the replies.
        public var corsOrigins: [String] = []
    }

    public struct RPCServer: Sendable, Equatable {
        /// Loopback by default: other machines reach it only with `rpcAuth` set (or explicitly allowed without).
        public var addr: HostPort = HostPort(host: "127.0.0.1", port: 3119)
        public var maxReceiveMessageSize: Int = 16 << 20
    }

    /// `[node]`: what `/goim/nodes/weighted` advertises, and the session timeout handed to comets.
    public struct Node: Sendable, Equatable {
        public var defaultDomain: String = "conn.goim.io"
        public var hostDomain: String = ".goim.io"
        public var heartbeat: Duration = .seconds(240)
        public var heartbeatMax: Int = 2
        public var tcpPort: Int = 3101
        public var wsPort: Int = 3102
        public var wssPort: Int = 3103
        public var regionWeight: Double = 1.6
    }

    public struct Backoff: Sendable, Equatable {
        public var maxDelay: Int = 300
        public var baseDelay: Int = 3
        public var factor: Double = 1.8
        public var jitter: Double = 0.3
    }

    /// `[auth]`: `goim` accepts goim's JSON auth body as goim does (no credential check); `jwt` reads
    /// the body's `token` (or the whole body) as a JWT and takes mid, room and accepts from its claims.
    public struct Auth: Sendable, Equatable {
        public var mode: String = "goim"
        /// `HS256` or `RS256`.
        public var jwtAlgorithm: String = "HS256"
        public var jwtSecret: String = ""
        /// PEM file with the RSA public key for RS256.
        public var jwtPublicKeyFile: String = ""
        /// A JWKS file (`{"keys":[...]}`, each key with its `kid`) holding every key a token may be signed with:
        /// several keys at once let the issuer rotate them. Replaces `jwtSecret` / `jwtPublicKeyFile` when set.
        public var jwksFile: String = ""
        public var jwtIssuer: String = ""
        public var jwtAudience: String = ""
        /// `goim` mode: let any client take over a connected key (goim's behaviour, bug 2). Off: only the member
        /// holding the key may (security.md, "Connection keys in goim mode").
        public var allowKeyTakeover = false

        public init() {}
    }

    public struct Online: Sendable, Equatable {
        /// How often the cluster-wide room counts are recomputed (goim: 10 s).
        public var refresh: Duration = .seconds(10)
        /// A comet whose counts are older than this is ignored and its key deleted (goim: 5 min).
        public var staleAfter: Duration = .seconds(300)
    }

    public var env = EnvironmentSection()
    public var log = LogSection()
    public var httpServer = HTTPServer()
    public var rpcServer = RPCServer()
    public var node = Node()
    public var backoff = Backoff()
    public var regions: [String: [String]] = [:]
    public var auth = Auth()
    public var online = Online()
    public var redis = RedisSection()
    public var nats = NATSSection()
    public var registry = RegistrySection()
    public var rpcAuth = RPCAuthSection()
    /// `[history]`: room types whose history logic serves (job writes it: give both the same section).
    public var history = HistorySection()

    public init() {}

    public init(_ reader: ConfigReader) throws(ConfigError) {
        let d = LogicConfiguration()
        env = EnvironmentSection(reader.section("env"))
        log = LogSection(reader.section("log"))

        let h = reader.section("httpServer")
        httpServer.addr = h.address("addr", default: "127.0.0.1:3111")
        httpServer.maxBodySize = h.int("maxBodySize", default: d.httpServer.maxBodySize, in: 1...(64 << 20))
        httpServer.pushToken = h.string("pushToken", default: "")
        httpServer.allowUnauthenticatedPush = h.bool("allowUnauthenticatedPush", default: false)
        if httpServer.pushToken.isEmpty, !httpServer.allowUnauthenticatedPush, !IPAddressLiteral.isLoopback(httpServer.addr.host) {
            h.invalid(
                "pushToken", "\"\"",
                "httpServer.addr = \"\(httpServer.addr)\" can be reached from other machines, and without a push token anyone "
                    + "who reaches it could push to every user. Set httpServer.pushToken (GOIM_HTTPSERVER_PUSHTOKEN), bind "
                    + "httpServer.addr to 127.0.0.1, or set httpServer.allowUnauthenticatedPush = true (goim's behaviour)")
        }
        httpServer.corsOrigins = h.strings("corsOrigins", default: [])
        httpServer.rateLimit = h.double("rateLimit", default: d.httpServer.rateLimit)
        if httpServer.rateLimit < 0 || !httpServer.rateLimit.isFinite {
            h.invalid("rateLimit", "\(httpServer.rateLimit)", "requests per second: 0 (no limit) or more")
        }
        httpServer.rateBurst = h.int("rateBurst", default: d.httpServer.rateBurst, in: 1...1_000_000)
        httpServer.maxConcurrentRequests = h.int(
            "maxConcurrentRequests", default: d.httpServer.maxConcurrentRequests, in: 0...1_000_000)
        httpServer.idleTimeout = h.duration("idleTimeout", default: d.httpServer.idleTimeout, minimum: .milliseconds(100))
        for origin in httpServer.corsOrigins where !Self.isCORSOrigin(origin) {
            h.invalid("corsOrigins", "\"\(origin)\"", "expected \"*\" or an origin such as \"http://127.0.0.1:1999\" (scheme://host[:port], no path)")
        }

        let r = reader.section("rpcServer")
        rpcServer.addr = r.address("addr", default: "127.0.0.1:3119")
        rpcServer.maxReceiveMessageSize = r.int("maxReceiveMessageSize", default: d.rpcServer.maxReceiveMessageSize, in: 1024...(256 << 20))

        let n = reader.section("node")
        node.defaultDomain = n.string("defaultDomain", default: d.node.defaultDomain)
        node.hostDomain = n.string("hostDomain", default: d.node.hostDomain)
        node.heartbeat = n.duration("heartbeat", default: d.node.heartbeat, minimum: .seconds(1))
        node.heartbeatMax = n.int("heartbeatMax", default: d.node.heartbeatMax, in: 1...100)
        node.tcpPort = n.int("tcpPort", default: d.node.tcpPort, in: 0...65535)
        node.wsPort = n.int("wsPort", default: d.node.wsPort, in: 0...65535)
        node.wssPort = n.int("wssPort", default: d.node.wssPort, in: 0...65535)
        node.regionWeight = n.double("regionWeight", default: d.node.regionWeight)
        if node.regionWeight < 1 { n.invalid("regionWeight", "\(node.regionWeight)", "must be at least 1") }

        let b = reader.section("backoff")
        backoff.maxDelay = b.int("maxDelay", default: d.backoff.maxDelay, in: 0...Int(Int32.max))
        backoff.baseDelay = b.int("baseDelay", default: d.backoff.baseDelay, in: 0...Int(Int32.max))
        backoff.factor = b.double("factor", default: d.backoff.factor)
        backoff.jitter = b.double("jitter", default: d.backoff.jitter)

        regions = reader.section("regions").stringListTable()

        let a = reader.section("auth")
        auth.mode = a.string("mode", default: d.auth.mode).lowercased()
        if !["goim", "jwt"].contains(auth.mode) { a.invalid("mode", "\"\(auth.mode)\"", "expected \"goim\" or \"jwt\"") }
        auth.jwtAlgorithm = a.string("jwtAlgorithm", default: d.auth.jwtAlgorithm).uppercased()
        auth.jwtSecret = a.string("jwtSecret", default: "")
        auth.jwtPublicKeyFile = a.string("jwtPublicKeyFile", default: "")
        auth.jwksFile = a.string("jwksFile", default: "")
        auth.jwtIssuer = a.string("jwtIssuer", default: "")
        auth.jwtAudience = a.string("jwtAudience", default: "")
        auth.allowKeyTakeover = a.bool("allowKeyTakeover", default: false)
        if auth.mode == "jwt" {
            switch auth.jwtAlgorithm {
            case "HS256" where auth.jwtSecret.isEmpty && auth.jwksFile.isEmpty:
                a.invalid("jwtSecret", "\"\"", "mode = \"jwt\" with HS256 needs a secret (or a jwksFile)")
            case "RS256" where auth.jwtPublicKeyFile.isEmpty && auth.jwksFile.isEmpty:
                a.invalid("jwtPublicKeyFile", "\"\"", "mode = \"jwt\" with RS256 needs a PEM public key file (or a jwksFile)")
            case "HS256", "RS256": break
            default: a.invalid("jwtAlgorithm", "\"\(auth.jwtAlgorithm)\"", "expected HS256 or RS256")
            }
        }

        let o = reader.section("online")
        online.refresh = o.duration("refresh", default: d.online.refresh, minimum: .milliseconds(100))
        online.staleAfter = o.duration("staleAfter", default: d.online.staleAfter, minimum: .seconds(1))

        redis = RedisSection(reader.section("redis"))
        nats = NATSSection(reader.section("nats"))
        registry = RegistrySection(reader.section("registry"))
        let ra = reader.section("rpcAuth")
        rpcAuth = RPCAuthSection(ra)
        history = HistorySection(reader.section("history"))
        rpcAuth.validate(listener: rpcServer.addr, listenerKey: "rpcServer.addr", in: ra)
        reader.acceptUnused([
            "discovery", "kafka", "rpcClient", "rpcServer.network", "rpcServer.timeout", "rpcServer.idleTimeout",
            "rpcServer.maxLifeTime", "rpcServer.forceCloseWait", "rpcServer.keepAliveInterval", "rpcServer.keepAliveTimeout",
            "httpServer.network", "httpServer.readTimeout", "httpServer.writeTimeout", "redis.network", "redis.idle",
            "redis.idleTimeout", "redis.writeTimeout",
        ])
        try reader.finish()
    }

    /// `*`, or `scheme://host[:port]` as a browser sends it in `Origin` (no path, no trailing slash).
    static func isCORSOrigin(_ text: String) -> Bool {
        if text == "*" { return true }
        guard let separator = text.range(of: "://") else { return false }
        let scheme = text[..<separator.lowerBound]
        let authority = text[separator.upperBound...]
        return !scheme.isEmpty && scheme.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) })
            && !authority.isEmpty && !authority.contains(where: { "/?#* ".contains($0) })
    }

    /// `node.heartbeat × node.heartbeatMax`: the server-side idle timeout handed to comets in `ConnectReply`.
    public var sessionHeartbeat: Duration { node.heartbeat * node.heartbeatMax }

    public static func load(path: String?, environment: [String: String]) throws(ConfigError) -> (LogicConfiguration, unknownKeys: [String]) {
        let reader = try ConfigReader(path: path, environment: environment)
        let configuration = try LogicConfiguration(reader)
        return (configuration, reader.unknownKeys)
    }
}
