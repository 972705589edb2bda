import Foundation
import Logging
import Primitives

/// A listen or dial address: goim writes `:3101` (all interfaces), `127.0.0.1:3101`, or `[::1]:3101`.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `:port` (host `0.0.0.0`, or `defaultHost`) or `[v6]:port`; an optional
    /// `scheme://` prefix (`nats://`, `redis://`, `grpc://`) is dropped.
    public init?(_ text: String, defaultHost: String = "0.0.0.0") {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        if let range = rest.range(of: "://") { rest = rest[range.upperBound...] }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? defaultHost : host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension ConfigSection {
    /// A list of addresses, each validated.
    public func addresses(_ key: String, default value: [String], defaultHost: String = "0.0.0.0") -> [HostPort] {
        let texts = strings(key, default: value)
        var result: [HostPort] = []
        for text in texts {
            guard let address = HostPort(text, defaultHost: defaultHost) else {
                invalid(key, "\"\(text)\"", "expected host:port or :port")
                continue
            }
            result.append(address)
        }
        return result
    }

    public func address(_ key: String, default value: String, defaultHost: String = "0.0.0.0") -> HostPort {
        let text = string(key, default: value)
        guard let address = HostPort(text, defaultHost: defaultHost) else {
            invalid(key, "\"\(text)\"", "expected host:port or :port")
            return HostPort(value, defaultHost: defaultHost)!
        }
        return address
    }
}

/// `[env]`: who this process is. `host` is a comet's server identity everywhere (Redis routing values,
/// `PushMsg.server`, the registry), as in goim; it defaults to the machine's hostname.
public struct EnvironmentSection: Sendable, Equatable {
    public var host: String
    public var region: String
    public var zone: String
    public var deployEnv: String
    public var weight: Int
    public var offline: Bool
    /// Public addresses advertised to clients by `/goim/nodes/weighted` (goim's `-addrs`).
    public var addrs: [String]

    public init(host: String = ProcessInfo.processInfo.hostName, region: String = "", zone: String = "",
                deployEnv: String = "", weight: Int = 10, offline: Bool = false, addrs: [String] = []) {
        self.host = host
        self.region = region
        self.zone = zone
        self.deployEnv = deployEnv
        self.weight = weight
        self.offline = offline
        self.addrs = addrs
    }

    public init(_ s: ConfigSection) {
        let d = EnvironmentSection()
        host = s.string("host", default: d.host)
        if host.isEmpty { s.invalid("host", "\"\"", "must not be empty: it identifies this process") }
        region = s.string("region", default: d.region)
        zone = s.string("zone", default: d.zone)
        deployEnv = s.string("deployEnv", default: d.deployEnv)
        weight = s.int("weight", default: d.weight, in: 0...1_000_000)
        offline = s.bool("offline", default: d.offline)
        addrs = s.strings("addrs", default: d.addrs)
    }
}

/// `[redis]`: the routing store and registry.
public struct RedisSection: Sendable, Equatable {
    public var addr: HostPort = HostPort(host: "127.0.0.1", port: 6379)
    public var auth: String = ""
    /// An ACL user (Redis 6+); `auth` is then its password.
    public var user: String = ""
    public var db: Int = 0
    /// Pooled connections per process (goim's `active` was a maximum for short-lived connections;
    /// ours are long-lived and pipelined, so a few suffice).
    public var active: Int = 8
    public var dialTimeout: Duration = .milliseconds(500)
    /// Deadline of one command or pipeline (goim's `readTimeout`).
    public var readTimeout: Duration = .seconds(1)
    /// TTL of the routing keys (`mid_*`, `key_*`, `ol_*`); whole seconds.
    public var expire: Duration = .seconds(1800)
    /// Redis Cluster seed nodes (`host:port`). Empty: a single Redis at `addr`. Not empty: cluster mode (`addr` is
    /// then unused, `db` must be 0); see docs/redis-cluster.md.
    public var cluster: [HostPort] = []
    /// In cluster mode, how often the slot table is re-read besides on MOVED.
    public var clusterRefresh: Duration = .seconds(5)

    public init() {}

    public init(_ s: ConfigSection) {
        let d = RedisSection()
        addr = s.address("addr", default: "127.0.0.1:6379", defaultHost: "127.0.0.1")
        auth = s.string("auth", default: d.auth)
        user = s.string("user", default: d.user)
        if !user.isEmpty && auth.isEmpty { s.invalid("auth", "\"\"", "redis.user needs its password in redis.auth") }
        db = s.int("db", default: d.db, in: 0...15)
        active = s.int("active", default: d.active, in: 1...1024)
        dialTimeout = s.duration("dialTimeout", default: d.dialTimeout, minimum: .milliseconds(1))
        readTimeout = s.duration("readTimeout", default: d.readTimeout, minimum: .milliseconds(1))
        expire = s.duration("expire", default: d.expire, minimum: .seconds(1))
        cluster = s.addresses("cluster", default: [], defaultHost: "127.0.0.1")
        clusterRefresh = s.duration("clusterRefresh", default: d.clusterRefresh, minimum: .milliseconds(100))
        if !cluster.isEmpty && db != 0 {
            s.invalid("db", "\(db)", "Redis Cluster has only database 0: remove redis.db or redis.cluster")
        }
    }
}

/// `[nats]`: the push queue. Logic publishes `PushMsg` on `<subject>.<type>` subjects of one JetStream
/// stream; job consumes them with one durable consumer shared by all job processes.
public struct NATSSection: Sendable, Equatable {
    public var urls: [String] = ["nats://127.0.0.1:4222"]
    public var user: String = ""
    public var password: String = ""
    public var token: String = ""
    /// A `.creds` file (user JWT and NKey seed from `nsc`) for operator-mode NATS.
    public var credentialsFile: String = ""
    /// TLS to NATS (also implied by a `tls://` URL); `tlsCAFile` empty = the system's trust store.
    public var tls: Bool = false
    public var tlsCAFile: String = ""
    /// Client certificate and key, for a NATS server that verifies clients.
    public var tlsCertFile: String = ""
    public var tlsKeyFile: String = ""
    public var stream: String = "GOIM_PUSH"
    /// Subject prefix: pushes go to `goim.push.push`, `goim.push.room`, `goim.push.broadcast`.
    public var subject: String = "goim.push"
    /// Where upstream client messages (goim's `Receive`) are published for the application.
    public var receiveSubject: String = "goim.receive"
    public var maxAge: Duration = .seconds(24 * 3600)
    public var maxBytes: Int = 1 << 30
    /// Copies of the push stream (and of job's consumer, which inherits it): 1 on a single nats-server, 3 on a
    /// three-node JetStream cluster (docs/nats-cluster.md). Logic and job update an existing stream to this count.
    public var replicas: Int = 1
    /// logic: how long one push may take to be stored. A publish that times out, finds no stream leader (a
    /// clustered stream electing one) or loses its connection is retried with the same message id within it
    /// (stored once); past it the push fails with -500 and the caller retries.
    public var publishTimeout: Duration = .seconds(5)
    /// How long the stream remembers push message ids: a push retried with the same `Idempotency-Key` within it is
    /// stored (and delivered) once. JetStream's default is 2 min.
    public var duplicateWindow: Duration = .seconds(120)
    /// logic: pushes waiting for their JetStream ack at once; more get HTTP 503 at once (NATS slow or away).
    public var maxPendingPublishes: Int = 4096
    public var connectTimeout: Duration = .seconds(2)

    public init() {}

    public init(_ s: ConfigSection) {
        let d = NATSSection()
        urls = s.strings("urls", default: d.urls)
        if urls.isEmpty { s.invalid("urls", "[]", "at least one NATS URL is needed") }
        for url in urls where HostPort(url, defaultHost: "127.0.0.1") == nil {
            s.invalid("urls", "\"\(url)\"", "expected nats://host:port")
        }
        user = s.string("user", default: d.user)
        password = s.string("password", default: d.password)
        token = s.string("token", default: d.token)
        credentialsFile = s.string("credentialsFile", default: d.credentialsFile)
        tls = s.bool("tls", default: d.tls)
        tlsCAFile = s.string("tlsCAFile", default: d.tlsCAFile)
        tlsCertFile = s.string("tlsCertFile", default: d.tlsCertFile)
        tlsKeyFile = s.string("tlsKeyFile", default: d.tlsKeyFile)
        if tlsCertFile.isEmpty != tlsKeyFile.isEmpty {
            s.invalid(tlsCertFile.isEmpty ? "tlsCertFile" : "tlsKeyFile", "\"\"", "a client certificate needs both tlsCertFile and tlsKeyFile")
        }
        if !user.isEmpty && !token.isEmpty {
            s.invalid("token", "\"…\"", "set either user/password or token, not both")
        }
        stream = s.string("stream", default: d.stream)
        if stream.isEmpty || stream.contains(where: { " .*>".contains($0) }) {
            s.invalid("stream", "\"\(stream)\"", "a JetStream stream name must be non-empty without spaces, '.', '*' or '>'")
        }
        subject = s.string("subject", default: d.subject)
        if subject.isEmpty || subject.contains(where: { " *>".contains($0) }) {
            s.invalid("subject", "\"\(subject)\"", "must be a literal subject prefix")
        }
        receiveSubject = s.string("receiveSubject", default: d.receiveSubject)
        maxAge = s.duration("maxAge", default: d.maxAge, minimum: .seconds(1))
        maxBytes = s.int("maxBytes", default: d.maxBytes, in: 1024...Int.max)
        replicas = s.int("replicas", default: d.replicas, in: 1...5)
        duplicateWindow = s.duration("duplicateWindow", default: d.duplicateWindow, minimum: .seconds(1))
        maxPendingPublishes = s.int("maxPendingPublishes", default: d.maxPendingPublishes, in: 1...1_000_000)
        publishTimeout = s.duration("publishTimeout", default: d.publishTimeout, minimum: .milliseconds(100))
        if duplicateWindow > maxAge {
            s.invalid("duplicateWindow", GoDuration.format(duplicateWindow), "must not be longer than nats.maxAge (\(GoDuration.format(maxAge)))")
        }
        connectTimeout = s.duration("connectTimeout", default: d.connectTimeout, minimum: .milliseconds(1))
    }

    /// The subject for one `PushMsg` type (`push`, `room` or `broadcast`).
    public func subject(for type: String) -> String { "\(subject).\(type)" }
}

/// `[registry]`: comets register in Redis under `<prefix><server>` with a TTL they refresh, so logic and
/// job find the live comets without a separate discovery service.
public struct RegistrySection: Sendable, Equatable {
    public var prefix: String = "goim:comet:"
    public var ttl: Duration = .seconds(30)
    public var refresh: Duration = .seconds(10)

    public init() {}

    public init(_ s: ConfigSection) {
        let d = RegistrySection()
        prefix = s.string("prefix", default: d.prefix)
        ttl = s.duration("ttl", default: d.ttl, minimum: .seconds(2))
        refresh = s.duration("refresh", default: d.refresh, minimum: .milliseconds(100))
        if refresh >= ttl {
            s.invalid("refresh", GoDuration.format(refresh), "must be shorter than registry.ttl (\(GoDuration.format(ttl)))")
        }
    }
}

/// `[monitor]`: the small HTTP port of comet and job serving `GET /metrics` (Prometheus), `/health` and `/ready`
/// (logic serves them on its HTTP port). Read-only and free of ids, so it binds every interface by default: Prometheus
/// and health checks run on other machines. `addr = ""` turns it off.
public struct MonitorSection: Sendable, Equatable {
    /// nil = off. Built in code (tests) it is off; the configuration files' default is the service's port.
    public var addr: HostPort?

    public init(addr: HostPort? = nil) {
        self.addr = addr
    }

    public init(_ s: ConfigSection, defaultPort: Int) {
        if s.string("addr", default: ":\(defaultPort)").isEmpty {
            addr = nil
        } else {
            addr = s.address("addr", default: ":\(defaultPort)")
        }
    }
}

/// `[rpcAuth]`: the shared secret of the internal gRPC ports (comet 3109, logic 3119). Every comet, logic and job
/// of one deployment has the same `secret`; each requires it from callers of its gRPC port and sends it on its calls.
public struct RPCAuthSection: Sendable, Equatable {
    public var secret: String = ""
    /// Let in calls that send no secret (goim's own job or logic calling swift-goim). A wrong secret is refused.
    public var allowUnauthenticated: Bool = false

    public init() {}

    public init(_ s: ConfigSection) {
        secret = s.string("secret", default: "")
        allowUnauthenticated = s.bool("allowUnauthenticated", default: false)
    }

    /// Refuses a gRPC listener reachable from other machines that would let anyone call it.
    func validate(listener: HostPort, listenerKey: String, in section: ConfigSection) {
        guard secret.isEmpty, !allowUnauthenticated, !IPAddressLiteral.isLoopback(listener.host) else { return }
        section.invalid(
            "secret", "\"\"",
            "\(listenerKey) = \"\(listener)\" can be reached from other machines, and without a secret anyone who reaches it "
                + "could push to every user or change routing. Set rpcAuth.secret (GOIM_RPCAUTH_SECRET, the same on every "
                + "comet, logic and job), bind \(listenerKey) to 127.0.0.1, or set rpcAuth.allowUnauthenticated = true "
                + "(goim's behaviour, for goim peers on a trusted network)")
    }
}

/// `[log]`: level of the process log (trace, debug, info, notice, warning, error, critical).
public struct LogSection: Sendable, Equatable {
    public var level: String = "info"

    public init() {}

    public init(_ s: ConfigSection) {
        level = s.string("level", default: "info").lowercased()
        if !["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) {
            s.invalid("level", "\"\(level)\"", "expected trace, debug, info, notice, warning, error or critical")
            level = "info"
        }
    }
}

extension LogSection {
    /// Sends every logger of the process to standard error at this section's level (call once, at start) and
    /// returns the service's logger, after warning about `unknownKeys` (keys in the file that no field reads).
    public func bootstrap(label: String, unknownKeys: [String]) -> Logger {
        let level = Logger.Level(rawValue: self.level) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        for key in unknownKeys {
            logger.warning("unknown configuration key ignored", metadata: ["goim.config.key": "\(key)"])
        }
        return logger
    }
}

/// How much history one stream keeps: the newest `size` messages, for `ttl` after the last one.
public struct HistoryLimits: Sendable, Equatable {
    public var size: Int
    public var ttl: Duration

    public init(size: Int, ttl: Duration) {
        self.size = size
        self.ttl = ttl
    }
}

/// `[history]`: which room types keep history, shared by job (which writes it) and logic (which serves it); rooms of
/// other types cost nothing extra. `rooms = ["live:100:10m"]`: rooms `live://…` keep their newest 100 messages, for 10
/// minutes after the last one (`GOIM_HISTORY_ROOMS=live:100:10m,chat:50:1h`). See docs/history.md.
public struct HistorySection: Sendable, Equatable {
    /// By room type: the `live` of `live://1000`.
    public var rooms: [String: HistoryLimits] = [:]
    /// Pushes addressed to users (`/goim/push/mids`) keep history: each user's newest `size`, for `ttl` after the
    /// last one (`mids = "100:24h"`, `GOIM_HISTORY_MIDS`). nil: goim's behaviour (routed to the users' comets only).
    public var mids: HistoryLimits?
    /// Most messages one history read returns (HTTP `limit`, a connection's recovery).
    public var maxRead: Int = 1000

    public init() {}

    public init(_ s: ConfigSection) {
        let d = HistorySection()
        maxRead = s.int("maxRead", default: d.maxRead, in: 1...100_000)
        for entry in s.strings("rooms", default: []) {
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard parts.count == 3, !parts[0].isEmpty, !parts[0].contains(where: { "/{} ".contains($0) }) else {
                s.invalid("rooms", "\"\(entry)\"", "expected \"type:size:ttl\", e.g. \"live:100:10m\" (type is the part before ://)")
                continue
            }
            guard let size = Int(parts[1]), (1...1_000_000).contains(size) else {
                s.invalid("rooms", "\"\(entry)\"", "the size (messages kept) must be an integer in 1...1000000")
                continue
            }
            guard let ttl = GoDuration.parse(parts[2]), ttl >= .seconds(1) else {
                s.invalid("rooms", "\"\(entry)\"", "the ttl must be a duration of at least 1s, e.g. \"10m\"")
                continue
            }
            let type = parts[0].lowercased()
            if rooms[type] != nil { s.invalid("rooms", "\"\(entry)\"", "room type \"\(type)\" is listed twice") }
            rooms[type] = HistoryLimits(size: size, ttl: ttl)
        }
        let users = s.string("mids", default: "").trimmingCharacters(in: .whitespaces)
        if !users.isEmpty {
            let parts = users.split(separator: ":", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            if parts.count != 2 {
                s.invalid("mids", "\"\(users)\"", "expected \"size:ttl\", e.g. \"100:24h\" (\"\" keeps no user history)")
            } else if let size = Int(parts[0]), (1...1_000_000).contains(size) {
                if let ttl = GoDuration.parse(parts[1]), ttl >= .seconds(1) {
                    mids = HistoryLimits(size: size, ttl: ttl)
                } else {
                    s.invalid("mids", "\"\(users)\"", "the ttl must be a duration of at least 1s, e.g. \"24h\"")
                }
            } else {
                s.invalid("mids", "\"\(users)\"", "the size (messages kept per user) must be an integer in 1...1000000")
            }
        }
    }

    /// The limits of room `id` (`type://rest`), nil when its type keeps no history.
    public func limits(forRoom id: String) -> HistoryLimits? {
        guard !rooms.isEmpty, let type = Self.roomType(of: id) else { return nil }
        return rooms[type.lowercased()]
    }

    /// `live` for `live://1000`; nil when the id has no `://`.
    public static func roomType(of id: String) -> Substring? {
        guard let range = id.range(of: "://") else { return nil }
        return id[..<range.lowerBound]
    }
}
