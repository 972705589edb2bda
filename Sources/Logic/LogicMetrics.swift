import GoIMRPC
import HTTPTypes
import Prometheus
import Redis
import Synchronization
import Telemetry

/// Logic's Prometheus families (docs/operations.md): HTTP requests by route and code, queue publishes timed to
/// JetStream's ack, gRPC calls (`RPCMetricsInterceptor`), and at scrape time the Redis client's counts and the
/// cluster's online totals as this logic last read them.
enum LogicMetrics {
    static func register(_ t: Telemetry, redis: RedisClient, cluster: ClusterState) {
        let commands = t.mirror("goim_logic_redis_commands_total", "Redis commands sent (routing, online counts, registry, history).")
        let failures = t.mirror("goim_logic_redis_failures_total", "Redis round trips that failed (connection errors, timeouts).")
        let comets = t.gauge("goim_logic_comets", "Comets in the registry (online or not) as this logic last read it.")
        let connections = t.gauge("goim_logic_online_connections", "Authenticated connections over all comets (their registry records).")
        let ips = t.gauge("goim_logic_online_ips", "Distinct client IPs over all comets (sum of the comets' counts).")
        let rooms = t.gauge("goim_logic_online_rooms", "Rooms with at least one member anywhere (the comets' RenewOnline reports).")
        t.collect {
            commands.update(to: redis.commandsSent.load(ordering: .relaxed))
            failures.update(to: redis.failures.load(ordering: .relaxed))
            let instances = cluster.instances
            comets.set(Int64(instances.count))
            connections.set(Int64(instances.reduce(0) { $0 + Int($1.connCount) }))
            ips.set(Int64(instances.reduce(0) { $0 + Int($1.ipCount) }))
            rooms.set(Int64(cluster.roomCount.count))
        }
    }
}

/// Per-route HTTP metrics: `goim_logic_http_requests_total{route,code}` and `goim_logic_http_request_duration_seconds{route}`.
/// The route label is one of the fixed paths or `other`, so a scan of random URLs cannot grow the series.
final class HTTPMetrics: Sendable {
    let telemetry: Telemetry
    /// Push requests answered by route, for the admin page's rates (it cannot read Prometheus counters back).
    private let pushes = Mutex<[String: Int]>(["keys": 0, "mids": 0, "room": 0, "all": 0])

    init(telemetry: Telemetry) {
        self.telemetry = telemetry
    }

    var pushRequests: [String: Int] { pushes.withLock { $0 } }

    func record(path: String, status: HTTPResponse.Status, duration: Duration) {
        let route = LogicHTTPResponder.routes[path] != nil || MonitorRoutes.paths.contains(path) ? path : "other"
        telemetry.counter(
            "goim_logic_http_requests_total", "HTTP requests answered, by route and status code.",
            labels: [("route", route), ("code", String(status.code))]
        ).increment()
        telemetry.latency(
            "goim_logic_http_request_duration_seconds", "Time to answer HTTP requests, by route (pushes include the JetStream ack).",
            labels: [("route", route)]
        ).record(duration)
        if route.hasPrefix("/goim/push/"), status == .ok {
            pushes.withLock { $0[String(route.dropFirst("/goim/push/".count)), default: 0] += 1 }
        }
    }
}

/// `PushQueue` with each publish timed to JetStream's ack (`goim_logic_queue_publish_duration_seconds{type}`) and
/// failures counted (`goim_logic_queue_publish_failures_total{type}`). Every series exists from the start, so an
/// alert on failures has a zero to compare with.
struct MeasuredPushQueue: PushQueue {
    let base: any PushQueue
    private let latency: [String: DurationHistogram]
    private let failures: [String: Prometheus.Counter]

    init(base: any PushQueue, telemetry: Telemetry) {
        self.base = base
        var latency: [String: DurationHistogram] = [:]
        var failures: [String: Prometheus.Counter] = [:]
        for type in ["push", "room", "broadcast", "other"] {
            latency[type] = telemetry.latency(
                "goim_logic_queue_publish_duration_seconds", "Time from publishing a push to JetStream's acknowledgement, by push type.",
                labels: [("type", type)])
            failures[type] = telemetry.counter(
                "goim_logic_queue_publish_failures_total", "Pushes JetStream did not acknowledge (the caller got an error).",
                labels: [("type", type)])
        }
        self.latency = latency
        self.failures = failures
    }

    func publish(_ message: Goim_Logic_PushMsg, id: String) async throws {
        let type = Self.typeLabel(message.type)
        let start = ContinuousClock.now
        do {
            try await base.publish(message, id: id)
            latency[type]?.record(start.elapsed)
        } catch {
            latency[type]?.record(start.elapsed)
            failures[type]?.increment()
            throw error
        }
    }

    func publishUpstream(_ request: Goim_Logic_ReceiveReq) async throws {
        try await base.publishUpstream(request)
    }

    func ping() async throws {
        try await base.ping()
    }

    static func typeLabel(_ type: Goim_Logic_PushMsg.TypeEnum) -> String {
        switch type {
        case .push: "push"
        case .room: "room"
        case .broadcast: "broadcast"
        default: "other"
        }
    }
}
