/// How to reach NATS. Defaults match a local nats-server; libnats reconnects on its own
/// (every `reconnectWait`, `maxReconnect` times per server, -1 = forever).
public struct NATSConfiguration: Sendable {
    /// Server URLs (`nats://host:port`); libnats tries them in random order and moves on when one is dead.
    public var urls: [String] = ["nats://127.0.0.1:4222"]
    /// Shown by the server (`connz`) as the client's name.
    public var name: String = "swift-goim"
    /// Timeout of one TCP connect + handshake attempt.
    public var connectTimeout: Duration = .seconds(2)
    public var reconnectWait: Duration = .milliseconds(250)
    /// Reconnect attempts per server before giving up and closing; negative means forever.
    public var maxReconnect: Int = -1
    public var user: String?
    public var password: String?
    public var token: String?
    /// A `.creds` file (user JWT and NKey seed, as `nsc` writes it) for decentralised (operator) authentication.
    public var credentialsFile: String?
    /// TLS to the servers: nil = plain TCP (unless a `tls://` URL asks for it).
    public var tls: TLS?

    public struct TLS: Sendable, Equatable {
        /// PEM CA certificates the server's certificate must chain to; nil = the system's trust store.
        public var caFile: String?
        /// PEM client certificate chain and key, for servers that verify clients (mutual TLS).
        public var certificateFile: String?
        public var keyFile: String?

        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }
    /// Requests (and JetStream publishes and acks) waiting for their reply when the connection drops fail at once
    /// with `.connectionDisconnected` instead of waiting out their timeout: the reply would come on the lost
    /// connection, if at all. Callers retry after libnats reconnected (to another server of `urls` when this one
    /// is gone).
    public var failRequestsOnDisconnect: Bool = true
    /// libnats' per-subscription limit of messages queued in the library behind a subscription's
    /// own bounded buffer; past it libnats drops messages and reports a slow consumer.
    public var maxPendingMessages: Int = 65536
    /// Threads that run libnats' blocking calls (connect, flush, request, JetStream publish and
    /// fetch, ack) off the Swift cooperative pool; it bounds how many of them run at once.
    public var blockingThreads: Int = 8

    public init(
        urls: [String] = ["nats://127.0.0.1:4222"],
        name: String = "swift-goim",
        connectTimeout: Duration = .seconds(2),
        reconnectWait: Duration = .milliseconds(250),
        maxReconnect: Int = -1,
        user: String? = nil,
        password: String? = nil,
        token: String? = nil,
        credentialsFile: String? = nil,
        tls: TLS? = nil
    ) {
        self.urls = urls
        self.name = name
        self.connectTimeout = connectTimeout
        self.reconnectWait = reconnectWait
        self.maxReconnect = maxReconnect
        self.user = user
        self.password = password
        self.token = token
        self.credentialsFile = credentialsFile
        self.tls = tls
    }
}

extension Duration {
    /// Whole milliseconds, as libnats wants its timeouts (at least 1 so that "0" never means "forever").
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return max(1, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }

    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
