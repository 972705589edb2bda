/// Everything `job` reads from `configs/job.toml`.
public struct JobConfiguration: Sendable, Equatable {
    /// `[consumer]`: the durable JetStream consumer shared by every job process.
    public struct Consumer: Sendable, Equatable {
        public var durable: String = "goim-job"
        /// Messages fetched per pull.
        public var batch: Int = 256
        /// Unacknowledged messages in flight for this job (back-pressure bound).
        public var maxInFlight: Int = 4096
        /// Redelivery after this long without an ack (job keeps it from expiring while it retries).
        public var ackWait: Duration = .seconds(30)
        /// How long one pull waits for messages. libnats' fetch returns at once when the stream has a
        /// backlog, else only when the whole batch arrived or this passed; a quiet job stops pulling and
        /// waits for a publish instead (docs/job.md, "Pull timing").
        public var fetchWait: Duration = .milliseconds(10)
        /// On graceful shutdown, how long messages in flight may take to reach their comets before
        /// they are handed back to the queue (nak) for another job.
        public var drainTimeout: Duration = .seconds(10)
    }

    /// `[comet]`: the gRPC clients to comets.
    public struct Comet: Sendable, Equatable {
        /// Concurrent calls per comet (goim: 32 workers).
        public var routineSize: Int = 32
        /// Deadline of one call to a comet.
        public var timeout: Duration = .seconds(5)
        /// First retry delay for a comet that fails; doubles up to `maxBackoff`.
        public var backoff: Duration = .milliseconds(100)
        public var maxBackoff: Duration = .seconds(3)
        /// A comet whose calls have all failed for this long (a call past `timeout` fails), or with none finishing for
        /// `timeout` + this, is stuck: one call probes it, the others skip it (their messages count as partially
        /// delivered) until it answers again.
        public var skipAfter: Duration = .seconds(2)
        /// A call to a comet is retried for at most this long, then its message counts as partially delivered.
        public var deliveryDeadline: Duration = .seconds(10)
    }

    /// `[room]`: room batching. Unlike goim, a message in a quiet room goes out at once; batching only
    /// gathers what arrives while a room's previous batch is still being sent (up to `batch` messages,
    /// or `signal` at most).
    public struct Room: Sendable, Equatable {
        public var batch: Int = 20
        public var signal: Duration = .seconds(1)
        public var idle: Duration = .seconds(900)
        /// Messages waiting per room before the consumer is slowed down (no silent drops, unlike goim).
        public var queueSize: Int = 1024
        /// Which comets get a room push: `all` (every comet, as goim; the default and the safe choice)
        /// or `rooms` (only comets whose `Rooms` answer lists the room; see docs/job.md for the race).
        public var targets: String = "all"
        /// How often each comet's `Rooms` is asked (only with `targets = "rooms"`).
        public var roomsRefresh: Duration = .seconds(1)
    }

    public var env = EnvironmentSection()
    public var log = LogSection()
    public var consumer = Consumer()
    public var comet = Comet()
    public var room = Room()
    public var redis = RedisSection()
    public var nats = NATSSection()
    public var registry = RegistrySection()
    /// `[monitor]`: `/metrics`, `/health`, `/ready` on their own port (default :3128; off when built in code).
    public var monitor = MonitorSection()
    public var rpcAuth = RPCAuthSection()
    /// `[history]`: room types whose messages job writes to history (and numbers with offsets).
    public var history = HistorySection()

    public init() {}

    public init(_ reader: ConfigReader) throws(ConfigError) {
        let d = JobConfiguration()
        env = EnvironmentSection(reader.section("env"))
        log = LogSection(reader.section("log"))

        let c = reader.section("consumer")
        consumer.durable = c.string("durable", default: d.consumer.durable)
        if consumer.durable.isEmpty || consumer.durable.contains(where: { " .*>".contains($0) }) {
            c.invalid("durable", "\"\(consumer.durable)\"", "a consumer name must be non-empty without spaces, '.', '*' or '>'")
        }
        consumer.batch = c.int("batch", default: d.consumer.batch, in: 1...10_000)
        consumer.maxInFlight = c.int("maxInFlight", default: d.consumer.maxInFlight, in: 1...1_000_000)
        consumer.ackWait = c.duration("ackWait", default: d.consumer.ackWait, minimum: .seconds(1))
        consumer.fetchWait = c.duration("fetchWait", default: d.consumer.fetchWait, minimum: .milliseconds(1))
        if consumer.fetchWait > .seconds(5) {
            c.invalid("fetchWait", GoDuration.format(consumer.fetchWait), "at most 5s: it delays lone messages")
        }
        consumer.drainTimeout = c.duration("drainTimeout", default: d.consumer.drainTimeout, minimum: .zero)

        let m = reader.section("comet")
        comet.routineSize = m.int("routineSize", default: d.comet.routineSize, in: 1...1024)
        comet.timeout = m.duration("timeout", default: d.comet.timeout, minimum: .milliseconds(10))
        comet.backoff = m.duration("backoff", default: d.comet.backoff, minimum: .milliseconds(1))
        comet.maxBackoff = m.duration("maxBackoff", default: d.comet.maxBackoff, minimum: .milliseconds(1))
        comet.skipAfter = m.duration("skipAfter", default: d.comet.skipAfter, minimum: .milliseconds(10))
        comet.deliveryDeadline = m.duration("deliveryDeadline", default: d.comet.deliveryDeadline, minimum: .milliseconds(10))

        let r = reader.section("room")
        room.batch = r.int("batch", default: d.room.batch, in: 1...10_000)
        room.signal = r.duration("signal", default: d.room.signal, minimum: .milliseconds(1))
        room.idle = r.duration("idle", default: d.room.idle, minimum: .seconds(1))
        room.queueSize = r.int("queueSize", default: d.room.queueSize, in: 1...1_000_000)
        room.targets = r.string("targets", default: d.room.targets).lowercased()
        if !["all", "rooms"].contains(room.targets) {
            r.invalid("targets", "\"\(room.targets)\"", "expected \"all\" or \"rooms\"")
        }
        room.roomsRefresh = r.duration("roomsRefresh", default: d.room.roomsRefresh, minimum: .milliseconds(50))

        redis = RedisSection(reader.section("redis"))
        nats = NATSSection(reader.section("nats"))
        registry = RegistrySection(reader.section("registry"))
        monitor = MonitorSection(reader.section("monitor"), defaultPort: 3128)
        rpcAuth = RPCAuthSection(reader.section("rpcAuth"))
        history = HistorySection(reader.section("history"))
        reader.acceptUnused(["discovery", "kafka", "comet.routineChan", "redis.expire"])
        try reader.finish()
    }

    public static func load(path: String?, environment: [String: String]) throws(ConfigError) -> (JobConfiguration, unknownKeys: [String]) {
        let reader = try ConfigReader(path: path, environment: environment)
        let configuration = try JobConfiguration(reader)
        return (configuration, reader.unknownKeys)
    }
}
