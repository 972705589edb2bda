/// Where and how to reach Redis. Durations are Swift `Duration`s; every field has a default.
public struct RedisConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Sent with AUTH when each connection is set up; nil means no AUTH.
    public var password: String?
    /// An ACL user (Redis 6+): AUTH then sends the user and the password.
    public var username: String?
    /// Selected with SELECT when each connection is set up.
    public var database: Int
    /// Number of connections; commands are spread over them (each connection pipelines many commands).
    public var poolSize: Int
    /// How long a TCP connect may take before it fails with `RedisError.connectionFailed`.
    public var connectTimeout: Duration
    /// How long a command (or a whole pipeline) may wait for its reply before it fails with `RedisError.timeout`.
    public var commandTimeout: Duration
    /// Redis Cluster seed nodes. Empty: a single Redis at `host:port`. Not empty: cluster mode; the topology is
    /// read (CLUSTER SLOTS) from any reachable seed, and `poolSize` connections are made per node.
    public var clusterNodes: [RedisNodeAddress]
    /// In cluster mode, how often the topology is re-read even when no redirection asked for it.
    public var clusterRefreshInterval: Duration

    public var isCluster: Bool { !clusterNodes.isEmpty }

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        password: String? = nil,
        database: Int = 0,
        poolSize: Int = 4,
        connectTimeout: Duration = .milliseconds(500),
        commandTimeout: Duration = .seconds(1),
        username: String? = nil,
        clusterNodes: [RedisNodeAddress] = [],
        clusterRefreshInterval: Duration = .seconds(5)
    ) {
        self.clusterNodes = clusterNodes
        self.clusterRefreshInterval = clusterRefreshInterval
        self.username = username
        self.host = host
        self.port = port
        self.password = password
        self.database = database
        self.poolSize = poolSize
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }
}

/// One Redis Cluster node, as `host:port`.
public struct RedisNodeAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (as in MOVED/ASK replies; the host may be an IPv6 address without brackets).
    public init?(_ text: Substring) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
