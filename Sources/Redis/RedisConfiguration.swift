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

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        password: String? = nil,
        database: Int = 0,
        poolSize: Int = 4,
        connectTimeout: Duration = .milliseconds(500),
        commandTimeout: Duration = .seconds(1),
        username: String? = nil
    ) {
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
