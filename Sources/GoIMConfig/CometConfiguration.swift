/// Everything `comet` reads from `configs/comet.toml` (goim's section and key names where goim has them).
public struct CometConfiguration: Sendable, Equatable {
    public struct TCP: Sendable, Equatable {
        public var bind: [HostPort] = [HostPort(host: "0.0.0.0", port: 3101)]
        public var sndbuf: Int = 4096
        public var rcvbuf: Int = 4096
        public var keepalive: Bool = false
        public var noDelay: Bool = true
    }

    public struct WebSocket: Sendable, Equatable {
        public var bind: [HostPort] = [HostPort(host: "0.0.0.0", port: 3102)]
        public var tlsOpen: Bool = false
        public var tlsBind: [HostPort] = [HostPort(host: "0.0.0.0", port: 3103)]
        /// Comma-separated certificate files, paired by position with `privateFile` (goim's form).
        public var certFile: [String] = []
        public var privateFile: [String] = []
        /// Largest frame accepted from a client (goim's read buffer, 8192).
        public var maxFrameSize: Int = 8192
    }

    public struct ProtocolSection: Sendable, Equatable {
        /// WebSocket upgrade plus authentication must finish within this.
        public var handshakeTimeout: Duration = .seconds(8)
        /// Largest inbound packet body (goim: 4096).
        public var maxBodySize: Int = 4096
        /// Most operations one connection may watch (auth `accepts` plus Sub); a client going over is closed
        /// (goim had no limit, and scanned its list for every Sub).
        public var maxWatchOps: Int = 256
        /// Bytes queued for one client beyond which it counts as a slow consumer.
        public var maxOutboundBytes: Int = 1 << 20
        /// What to do with a slow consumer: `close` it (default) or `drop` the messages that do not fit.
        public var slowConsumerPolicy: String = "close"
        /// Write pushes to plain TCP/WebSocket sockets directly when NIO has nothing queued for them (faster fan-out).
        public var directWrite = true
        /// Logic's `Heartbeat` is called at most once per random interval in this range (goim: 10–30 min, which let a
        /// session expire before its refresh with goim's 30 min `redis.expire`). Must stay below `redis.expire`.
        public var sessionRefreshMin: Duration = .seconds(600)
        public var sessionRefreshMax: Duration = .seconds(1200)
        /// When Redis lost this comet's sessions (its registry record was gone at a refresh), each connection writes its
        /// session again at its first heartbeat after a random delay of up to this long (at most `sessionRefreshMin`):
        /// mids pushes reach it again after that, instead of after its next session refresh.
        public var sessionRewriteSpread: Duration = .seconds(30)
    }

    public struct RPCServer: Sendable, Equatable {
        /// Loopback by default: other machines reach it only with `rpcAuth` set (or explicitly allowed without).
        public var addr: HostPort = HostPort(host: "127.0.0.1", port: 3109)
        /// goim kept grpc-go's 4 MiB while its clients send up to 16 MiB (goim bug 35); we accept 16 MiB.
        public var maxReceiveMessageSize: Int = 16 << 20
        public var idleTimeout: Duration = .seconds(60)
        public var keepAliveInterval: Duration = .seconds(60)
        public var keepAliveTimeout: Duration = .seconds(20)
    }

    public struct RPCClient: Sendable, Equatable {
        /// Logic gRPC addresses; calls are spread round-robin over them.
        public var addrs: [HostPort] = [HostPort(host: "127.0.0.1", port: 3119)]
        public var dial: Duration = .seconds(1)
        /// Deadline of each call to logic (goim had none: bug 31).
        public var timeout: Duration = .seconds(5)
        /// Most Connects (or Disconnects) sent to logic in one `swiftgoim.logic.LogicBatch` call while earlier calls
        /// are in flight; 1 = goim's one call per connection. A comet falls back by itself against goim's logic.
        public var batchSize: Int = 128
    }

    public struct Bucket: Sendable, Equatable {
        public var size: Int = 32
    }

    public struct Whitelist: Sendable, Equatable {
        public var whitelist: [Int64] = []
        public var whiteLog: String = ""
    }

    public struct Limits: Sendable, Equatable {
        /// Connections allowed from one remote IP; 0 = unlimited (goim has no limit).
        public var maxConnectionsPerIP: Int = 4096
        /// New connections per second from one remote IP (a token bucket of `connectBurstPerIP`); 0 = unlimited.
        public var connectRatePerIP: Double = 100
        public var connectBurstPerIP: Int = 200
        /// The per-IP limits do not apply to loopback peers (a TLS proxy or load generator on the same machine).
        public var exemptLoopback: Bool = true
        /// Open client connections at most; 0 = the process's file-descriptor limit minus `reservedDescriptors`.
        public var maxConnections: Int = 0
        /// Descriptors kept for everything else (Redis, gRPC, logs, files) when `maxConnections` is derived.
        public var reservedDescriptors: Int = 256
    }

    public var env = EnvironmentSection()
    public var log = LogSection()
    /// Event-loop threads shared by every transport; 0 = one per core.
    public var eventLoopThreads: Int = 0
    public var tcp = TCP()
    public var websocket = WebSocket()
    public var proto = ProtocolSection()
    public var rpcServer = RPCServer()
    public var rpcClient = RPCClient()
    public var bucket = Bucket()
    public var whitelist = Whitelist()
    public var limits = Limits()
    public var redis = RedisSection()
    public var registry = RegistrySection()
    /// `[monitor]`: `/metrics`, `/health`, `/ready` on their own port (default :3108; off when built in code).
    public var monitor = MonitorSection()
    public var rpcAuth = RPCAuthSection()
    /// How often room counts are reported to logic (`RenewOnline`), goim: 10 s.
    public var onlineInterval: Duration = .seconds(10)
    /// `[history]`: how the comet orders room messages with offsets and recovers clients (docs/history.md).
    public var history = History()

    public struct History: Sendable, Equatable {
        /// A room message that arrives ahead of a missing offset waits this long for it (two jobs finish out of
        /// order); then the comet reads the missing ones from history through logic, or skips them if gone.
        public var gapWait: Duration = .milliseconds(500)
        /// Out-of-order messages held per room at most; more forces the gap to be filled (or skipped) at once.
        public var maxHeld: Int = 10_000
        /// Most messages one client recovers on connect (logic caps it again at its `history.maxRead`).
        public var recoverLimit: Int = 1000
    }

    public init() {}

    public init(_ reader: ConfigReader) throws(ConfigError) {
        let d = CometConfiguration()
        env = EnvironmentSection(reader.section("env"))
        log = LogSection(reader.section("log"))
        eventLoopThreads = reader.top.int("eventLoopThreads", default: 0, in: 0...1024)

        let t = reader.section("tcp")
        tcp.bind = t.addresses("bind", default: [":3101"])
        tcp.sndbuf = t.int("sndbuf", default: d.tcp.sndbuf, in: 0...(64 << 20))
        tcp.rcvbuf = t.int("rcvbuf", default: d.tcp.rcvbuf, in: 0...(64 << 20))
        tcp.keepalive = t.bool("keepalive", default: d.tcp.keepalive)
        tcp.noDelay = t.bool("noDelay", default: d.tcp.noDelay)

        let w = reader.section("websocket")
        websocket.bind = w.addresses("bind", default: [":3102"])
        websocket.tlsOpen = w.bool("tlsOpen", default: false)
        websocket.tlsBind = w.addresses("tlsBind", default: [":3103"])
        websocket.certFile = w.strings("certFile", default: [])
        websocket.privateFile = w.strings("privateFile", default: [])
        websocket.maxFrameSize = w.int("maxFrameSize", default: d.websocket.maxFrameSize, in: 32...(16 << 20))
        if websocket.tlsOpen {
            if websocket.certFile.isEmpty {
                w.invalid("certFile", "\"\"", "tlsOpen = true needs at least one certificate file")
            }
            if websocket.certFile.count != websocket.privateFile.count {
                w.invalid("privateFile", websocket.privateFile.joined(separator: ","),
                          "needs one key file per certificate in certFile (\(websocket.certFile.count))")
            }
        }

        let p = reader.section("protocol")
        proto.handshakeTimeout = p.duration("handshakeTimeout", default: d.proto.handshakeTimeout, minimum: .milliseconds(10))
        proto.maxBodySize = p.int("maxBodySize", default: d.proto.maxBodySize, in: 0...(16 << 20))
        proto.maxWatchOps = p.int("maxWatchOps", default: d.proto.maxWatchOps, in: 1...65536)
        proto.maxOutboundBytes = p.int("maxOutboundBytes", default: d.proto.maxOutboundBytes, in: 4096...(1 << 30))
        proto.slowConsumerPolicy = p.string("slowConsumerPolicy", default: d.proto.slowConsumerPolicy)
        proto.directWrite = p.bool("directWrite", default: d.proto.directWrite)
        if !["close", "drop"].contains(proto.slowConsumerPolicy) {
            p.invalid("slowConsumerPolicy", "\"\(proto.slowConsumerPolicy)\"", "expected \"close\" or \"drop\"")
        }
        proto.sessionRefreshMin = p.duration("sessionRefreshMin", default: d.proto.sessionRefreshMin, minimum: .seconds(1))
        proto.sessionRefreshMax = p.duration("sessionRefreshMax", default: d.proto.sessionRefreshMax, minimum: .seconds(1))
        if proto.sessionRefreshMax < proto.sessionRefreshMin {
            p.invalid("sessionRefreshMax", GoDuration.format(proto.sessionRefreshMax), "must not be shorter than sessionRefreshMin")
        }
        proto.sessionRewriteSpread = p.duration("sessionRewriteSpread", default: d.proto.sessionRewriteSpread)

        let rs = reader.section("rpcServer")
        rpcServer.addr = rs.address("addr", default: "127.0.0.1:3109")
        rpcServer.maxReceiveMessageSize = rs.int("maxReceiveMessageSize", default: d.rpcServer.maxReceiveMessageSize, in: 1024...(256 << 20))
        rpcServer.idleTimeout = rs.duration("idleTimeout", default: d.rpcServer.idleTimeout)
        rpcServer.keepAliveInterval = rs.duration("keepAliveInterval", default: d.rpcServer.keepAliveInterval, minimum: .seconds(1))
        rpcServer.keepAliveTimeout = rs.duration("keepAliveTimeout", default: d.rpcServer.keepAliveTimeout, minimum: .milliseconds(100))

        let rc = reader.section("rpcClient")
        rpcClient.addrs = rc.addresses("addrs", default: ["127.0.0.1:3119"], defaultHost: "127.0.0.1")
        if rpcClient.addrs.isEmpty { rc.invalid("addrs", "[]", "at least one logic address is needed") }
        rpcClient.dial = rc.duration("dial", default: d.rpcClient.dial, minimum: .milliseconds(1))
        rpcClient.timeout = rc.duration("timeout", default: d.rpcClient.timeout, minimum: .milliseconds(1))
        rpcClient.batchSize = rc.int("batchSize", default: d.rpcClient.batchSize, in: 1...4096)

        bucket.size = reader.section("bucket").int("size", default: d.bucket.size, in: 1...4096)

        let wl = reader.section("whitelist")
        whitelist.whitelist = wl.ints("whitelist", default: []).map(Int64.init)
        whitelist.whiteLog = wl.string("whiteLog", default: "")

        let l = reader.section("limits")
        limits.maxConnectionsPerIP = l.int("maxConnectionsPerIP", default: d.limits.maxConnectionsPerIP, in: 0...10_000_000)
        limits.connectRatePerIP = l.double("connectRatePerIP", default: d.limits.connectRatePerIP)
        if limits.connectRatePerIP < 0 || !limits.connectRatePerIP.isFinite {
            l.invalid("connectRatePerIP", "\(limits.connectRatePerIP)", "connections per second: 0 (no limit) or more")
        }
        limits.connectBurstPerIP = l.int("connectBurstPerIP", default: d.limits.connectBurstPerIP, in: 1...10_000_000)
        limits.exemptLoopback = l.bool("exemptLoopback", default: d.limits.exemptLoopback)
        limits.maxConnections = l.int("maxConnections", default: d.limits.maxConnections, in: 0...100_000_000)
        limits.reservedDescriptors = l.int("reservedDescriptors", default: d.limits.reservedDescriptors, in: 16...1_000_000)
        redis = RedisSection(reader.section("redis"))
        if proto.sessionRefreshMax >= redis.expire {
            p.invalid(
                "sessionRefreshMax", GoDuration.format(proto.sessionRefreshMax),
                "must be shorter than redis.expire (\(GoDuration.format(redis.expire))), the TTL of a session's routing: "
                    + "refreshed later, a session vanishes from Redis in between and its pushes are lost")
        }
        registry = RegistrySection(reader.section("registry"))
        monitor = MonitorSection(reader.section("monitor"), defaultPort: 3108)
        let ra = reader.section("rpcAuth")
        rpcAuth = RPCAuthSection(ra)
        rpcAuth.validate(listener: rpcServer.addr, listenerKey: "rpcServer.addr", in: ra)
        onlineInterval = reader.section("online").duration("interval", default: d.onlineInterval, minimum: .milliseconds(100))
        let h = reader.section("history")
        history.gapWait = h.duration("gapWait", default: d.history.gapWait, minimum: .milliseconds(1))
        history.maxHeld = h.int("maxHeld", default: d.history.maxHeld, in: 1...1_000_000)
        history.recoverLimit = h.int("recoverLimit", default: d.history.recoverLimit, in: 0...100_000)
        reader.acceptUnused([
            "debug", "discovery", "rpcClient.dial", "rpcServer.network", "rpcServer.timeout", "rpcServer.maxLifeTime",
            "rpcServer.forceCloseWait", "tcp.reader", "tcp.readBuf", "tcp.readBufSize", "tcp.writer", "tcp.writeBuf",
            "tcp.writeBufSize", "protocol.timer", "protocol.timerSize", "protocol.svrProto", "protocol.cliProto",
            "bucket.channel", "bucket.room", "bucket.routineAmount", "bucket.routineSize",
        ])
        try reader.finish()
    }

    /// Loads `path` (nil: defaults only) with `GOIM_*` environment overrides; returns the keys it did not know.
    public static func load(path: String?, environment: [String: String]) throws(ConfigError) -> (CometConfiguration, unknownKeys: [String]) {
        let reader = try ConfigReader(path: path, environment: environment)
        let configuration = try CometConfiguration(reader)
        return (configuration, reader.unknownKeys)
    }
}
