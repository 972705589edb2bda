import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Synchronization
import TestSupport
import Testing

/// A whole swift-goim cluster for one test, every part a separate process on its own free loopback ports: a
/// redis-server, a nats-server (JetStream), the built `logic`, `comet` and `job` executables. Configured only
/// through `GOIM_<SECTION>_<KEY>` environment overrides, with short registry and online periods so that the
/// cluster notices comets coming and going within a second or two.
public final class Stack: Sendable {
    public struct Logic: Sendable {
        public let process: ServerProcess
        public let httpPort: Int
        public let rpcPort: Int
        /// Its address: 127.0.0.1, or its own in its network namespace (`Options.namespaces`).
        public var host: String { process.host }
    }

    public struct Comet: Sendable {
        public let name: String
        public let process: ServerProcess
        public let tcpPort: Int
        public let webSocketPort: Int
        public let rpcPort: Int
        /// `/metrics`, `/health`, `/ready`.
        public let monitorPort: Int
        /// Its address: 127.0.0.1, or its own in its network namespace (`Options.namespaces`).
        public var host: String { process.host }
    }

    public struct Options: Sendable {
        public var logics = 1
        public var comets = 1
        public var jobs = 1
        /// Extra environment for every logic (e.g. `GOIM_HTTPSERVER_CORSORIGINS`).
        public var logicEnvironment: [String: String] = [:]
        /// Extra environment for every comet.
        public var cometEnvironment: [String: String] = [:]
        /// A program (and its arguments) that runs each comet, e.g. `["/usr/bin/prlimit", "--nofile=300:300"]`.
        public var cometLauncher: [String] = []
        /// Extra environment for every job.
        public var jobEnvironment: [String: String] = [:]
        /// nats-servers: 1 runs one; more run a JetStream cluster of that many (`NATSCluster`), every logic and job
        /// gets all their URLs and the push stream is created with `natsReplicas` replicas.
        public var natsNodes = 1
        /// `nats.replicas` when `natsNodes` > 1 (R3 by default: the stream survives the loss of any one server).
        public var natsReplicas = 3
        /// Runs every process in its own network namespace with its own address (`NetworkNamespaces`; root only):
        /// services bind and advertise those addresses, the test reaches them over a bridge.
        public var namespaces = false
        /// Runs a Redis Cluster (3 masters, 3 replicas: `RedisClusterProcess`) instead of one redis-server; every
        /// process gets all its nodes in `GOIM_REDIS_CLUSTER`.
        public var redisCluster = false

        public init() {}
    }

    /// The redis-server (the Redis Cluster's first node when `redisCluster` is set).
    public let redis: ServerProcess
    /// The whole Redis Cluster when `Options.redisCluster` is set.
    public let redisCluster: RedisClusterProcess?
    /// The nats-server (the cluster's first node when `natsCluster` is set).
    public let nats: ServerProcess
    /// The whole NATS cluster when `Options.natsNodes` > 1.
    public let natsCluster: NATSCluster?
    public let logics: [Logic]
    public let comets: [Comet]
    public let jobs: [ServerProcess]
    /// Each job's monitor port (`/metrics`, `/health`, `/ready`), by index in `jobs`.
    public let jobMonitorPorts: [Int]
    /// The namespaces the processes run in (`Options.namespaces`), else nil.
    public let network: NetworkNamespaces?

    /// Registry periods: a comet rewrites its record every `registryRefresh`; a dead one disappears after `registryTTL`.
    public static let registryRefresh = "250ms"
    public static let registryTTL = "2s"

    private init(
        redis: ServerProcess, redisCluster: RedisClusterProcess?, nats: ServerProcess, natsCluster: NATSCluster?,
        logics: [Logic], comets: [Comet], jobs: [ServerProcess], jobMonitorPorts: [Int], network: NetworkNamespaces?
    ) {
        self.network = network
        self.redisCluster = redisCluster
        self.jobMonitorPorts = jobMonitorPorts
        self.redis = redis
        self.nats = nats
        self.natsCluster = natsCluster
        self.logics = logics
        self.comets = comets
        self.jobs = jobs
    }

    public var processes: [ServerProcess] {
        jobs + comets.map(\.process) + logics.map(\.process) + (natsCluster?.nodes.map(\.process) ?? [nats])
            + (redisCluster?.nodes.map(\.process) ?? [redis])
    }

    /// Starts the cluster, waits until every part sees every other, runs `body`, and stops every process whatever
    /// happens (a process's output is attached to the failure when the cluster does not come up).
    public static func run(_ options: Options = Options(), _ body: (Stack) async throws -> Void) async throws {
        // Removed after every process stopped (the stops below are awaited).
        let network = options.namespaces ? try NetworkNamespaces.create(services: services(options)) : nil
        defer { network?.remove() }
        var started: [ServerProcess] = []
        let stack: Stack
        do {
            stack = try await start(options, network: network) { started.append($0) }
        } catch {
            for process in started.reversed() { await process.stop() }
            throw error
        }
        do {
            try await body(stack)
        } catch {
            let outputs = stack.outputs
            await stack.stopAll()
            throw StackTestError("\(error)\n\(outputs)")
        }
        await stack.stopAll()
    }

    /// The processes' names, which name their namespaces.
    static func services(_ options: Options) -> [String] {
        ["redis", "nats"] + (0..<options.logics).map { "logic-\($0 + 1)" } + (0..<options.comets).map(cometName)
            + (0..<options.jobs).map { "job-\($0 + 1)" }
    }

    static func cometName(_ index: Int) -> String { "comet-\(Character(UnicodeScalar(UInt8(ascii: "a") + UInt8(index))))" }

    private static func start(_ options: Options, network: NetworkNamespaces?, track: (ServerProcess) -> Void) async throws -> Stack {
        precondition(network == nil || options.natsNodes == 1, "namespaces: one nats-server only")
        precondition(network == nil || !options.redisCluster, "namespaces: one redis-server only")
        let host = { (service: String) in network?.address(service) ?? "127.0.0.1" }
        let launcher = { (service: String) in network?.launcher(service) ?? [] }
        let redis: ServerProcess
        let redisCluster: RedisClusterProcess?
        let redisEnvironment: [String: String]
        if options.redisCluster {
            let cluster = try await RedisClusterProcess.start()
            cluster.nodes.forEach { track($0.process) }
            redisCluster = cluster
            redis = cluster.nodes[0].process
            redisEnvironment = ["GOIM_REDIS_CLUSTER": cluster.addresses.joined(separator: ","), "GOIM_REDIS_CLUSTERREFRESH": "1s"]
        } else {
            redis = try await TestServers.redis(host: host("redis"), launcher: launcher("redis"))
            track(redis)
            redisCluster = nil
            redisEnvironment = ["GOIM_REDIS_ADDR": "\(redis.host):\(redis.port)"]
        }
        let nats: ServerProcess
        let natsCluster: NATSCluster?
        let natsURLs: [String]
        if options.natsNodes > 1 {
            let cluster = try await NATSCluster.start(size: options.natsNodes)
            cluster.nodes.forEach { track($0.process) }
            natsCluster = cluster
            nats = cluster.nodes[0].process
            natsURLs = cluster.urls
        } else {
            nats = try await TestServers.nats(jetStream: true, host: host("nats"), launcher: launcher("nats"))
            track(nats)
            natsCluster = nil
            natsURLs = ["nats://\(nats.host):\(nats.port)"]
        }
        let shared = redisEnvironment.merging([
            "GOIM_REGISTRY_TTL": registryTTL,
            "GOIM_REGISTRY_REFRESH": registryRefresh,
            "GOIM_LOG_LEVEL": "info",
            // Every stack runs with the internal secret: job → comet and comet → logic calls carry it.
            "GOIM_RPCAUTH_SECRET": "stack-\(UUID().uuidString)",
        ]) { $1 }
        var natsShared = [
            "GOIM_NATS_URLS": natsURLs.joined(separator: ","),
            "GOIM_NATS_MAXBYTES": "\(64 << 20)",
        ]
        if natsCluster != nil { natsShared["GOIM_NATS_REPLICAS"] = "\(options.natsReplicas)" }

        var logics: [Logic] = []
        for index in 0..<options.logics {
            let (httpPort, rpcPort) = (TestServers.freePort(), TestServers.freePort())
            let name = "logic-\(index + 1)"
            var environment = shared.merging(natsShared) { $1 }
            environment.merge([
                "GOIM_ENV_HOST": name,
                "GOIM_HTTPSERVER_ADDR": "\(host(name)):\(httpPort)",
                "GOIM_RPCSERVER_ADDR": "\(host(name)):\(rpcPort)",
                "GOIM_ONLINE_REFRESH": "250ms",
            ]) { $1 }
            // Off loopback logic wants a push token and rate-limits per client IP; the bridge only exists for this
            // test, whose pushes all come from one address.
            if network != nil {
                environment["GOIM_HTTPSERVER_ALLOWUNAUTHENTICATEDPUSH"] = "true"
                environment["GOIM_HTTPSERVER_RATELIMIT"] = "0"
            }
            environment.merge(options.logicEnvironment) { $1 }
            let process = try TestServers.executable(
                "logic", arguments: [], port: httpPort, environment: environment, host: host(name), launcher: launcher(name))
            track(process)
            try await process.start()
            logics.append(Logic(process: process, httpPort: httpPort, rpcPort: rpcPort))
        }

        var comets: [Comet] = []
        for index in 0..<options.comets {
            let name = cometName(index)
            let address = host(name)
            let (tcp, webSocket, rpc, monitor) = (TestServers.freePort(), TestServers.freePort(), TestServers.freePort(), TestServers.freePort())
            var environment = shared
            environment.merge([
                "GOIM_ENV_HOST": name,
                "GOIM_ENV_ADDRS": address,
                "GOIM_EVENTLOOPTHREADS": "1",
                "GOIM_TCP_BIND": "\(address):\(tcp)",
                "GOIM_WEBSOCKET_BIND": "\(address):\(webSocket)",
                // registered as this comet's RPC address: job calls it there
                "GOIM_RPCSERVER_ADDR": "\(address):\(rpc)",
                "GOIM_MONITOR_ADDR": "\(address):\(monitor)",
                // comet k talks to logic k mod n: with two logics both serve connections
                "GOIM_RPCCLIENT_ADDRS": "\(logics[index % logics.count].host):\(logics[index % logics.count].rpcPort)",
                "GOIM_ONLINE_INTERVAL": "250ms",
            ]) { $1 }
            // Every test client comes from the bridge's one address: no per-IP connect rate.
            if network != nil { environment["GOIM_LIMITS_CONNECTRATEPERIP"] = "0" }
            environment.merge(options.cometEnvironment) { $1 }
            let cometLauncher = launcher(name) + options.cometLauncher
            let process = try TestServers.executable(
                "comet", arguments: [], port: tcp, environment: environment, host: address, launcher: cometLauncher)
            track(process)
            try await process.start()
            comets.append(Comet(name: name, process: process, tcpPort: tcp, webSocketPort: webSocket, rpcPort: rpc, monitorPort: monitor))
        }

        var jobs: [ServerProcess] = []
        var jobMonitorPorts: [Int] = []
        for index in 0..<options.jobs {
            let monitor = TestServers.freePort()
            jobMonitorPorts.append(monitor)
            let name = "job-\(index + 1)"
            var environment = shared.merging(natsShared) { $1 }
            environment.merge([
                "GOIM_ENV_HOST": name,
                "GOIM_MONITOR_ADDR": "\(host(name)):\(monitor)",
                // a killed job's unacknowledged messages come back after this
                "GOIM_CONSUMER_ACKWAIT": "2s",
                "GOIM_COMET_BACKOFF": "20ms",
                "GOIM_COMET_MAXBACKOFF": "200ms",
            ]) { $1 }
            environment.merge(options.jobEnvironment) { $1 }
            let process = try TestServers.executable(
                "job", arguments: [], port: monitor, environment: environment, host: host(name), launcher: launcher(name))
            track(process)
            try await process.start()
            jobs.append(process)
        }

        let stack = Stack(
            redis: redis, redisCluster: redisCluster, nats: nats, natsCluster: natsCluster, logics: logics, comets: comets,
            jobs: jobs, jobMonitorPorts: jobMonitorPorts, network: network)
        try await stack.waitUntilReady()
        return stack
    }

    /// Every logic is ready (/ready: Redis and NATS answer), lists every comet, and every job consumes and knows every comet.
    private func waitUntilReady() async throws {
        for logic in logics.indices {
            try await eventually("logic \(logic + 1) healthy (Redis and NATS connected)") {
                try await self.get("/ready", logic: logic).status == 200
            }
        }
        try await waitForInstances(Set(comets.map(\.name)))
        for job in jobs {
            try await eventually("\(job.name) consuming") { job.output.contains("consuming pushes") }
            for comet in comets {
                try await eventually("\(job.name) knows \(comet.name)") { Self.cometEvents("comet added", comet.name, in: job.output) >= 1 }
            }
        }
    }

    /// Runs one command on the stack's Redis with `redis-cli`; returns its output without the trailing newline.
    public func redisCommand(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["redis-cli", "-h", redis.host, "-p", "\(redis.port)"] + (redisCluster == nil ? [] : ["-c"]) + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func stopAll() async {
        for process in processes { await process.stop() }
    }

    // MARK: - Watching processes

    /// How many times a job logged `event` ("comet added" or "comet removed") for comet `name`.
    public static func cometEvents(_ event: String, _ name: String, in output: String) -> Int {
        output.split(separator: "\n").filter { $0.contains(event) && $0.contains("goim.server=\(name) ") }.count
    }

    /// Waits until every logic's `/goim/nodes/instances` lists exactly these comets.
    public func waitForInstances(_ names: Set<String>) async throws {
        for logic in logics.indices {
            try await eventually("logic \(logic + 1) lists comets \(names.sorted())") {
                try await self.instanceNames(logic: logic) == names
            }
        }
    }

    public func instanceNames(logic: Int = 0) async throws -> Set<String> {
        let reply = try await get("/goim/nodes/instances", logic: logic)
        guard let instances = reply.json?["data"] as? [[String: Any]] else { return [] }
        return Set(instances.compactMap { $0["hostname"] as? String })
    }

    /// Output of every process, for failure messages.
    public var outputs: String {
        processes.map { "---- \($0.name) (port \($0.port)) ----\n\($0.output.suffix(3000))" }.joined(separator: "\n")
    }

    // MARK: - HTTP API

    public struct Reply: Sendable {
        public var status: Int
        public var body: String
        public var headers: HTTPFields

        /// The body as a JSON object (goim's envelope).
        public var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        }

        public var code: Int? { json?["code"] as? Int }
    }

    public func request(
        _ method: HTTPRequest.Method, _ uri: String, body: String? = nil, headers: HTTPFields = [:], logic: Int = 0
    ) async throws -> Reply {
        try await TestClient.withClient(host: logics[logic].host, port: logics[logic].httpPort) { client in
            let response = try await client.execute(
                TestClient.Request(uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }))
            return Reply(
                status: response.status.code, body: response.body.map { String(buffer: $0) } ?? "",
                headers: response.headers)
        }
    }

    /// GET on any HTTP port of the stack (a comet's or job's monitor port).
    public static func get(_ uri: String, port: Int, host: String = "127.0.0.1") async throws -> Reply {
        try await TestClient.withClient(host: host, port: port) { client in
            let response = try await client.execute(TestClient.Request(uri, method: .get, headers: [:], body: nil))
            return Reply(
                status: response.status.code, body: response.body.map { String(buffer: $0) } ?? "", headers: response.headers)
        }
    }

    public func get(_ uri: String, logic: Int = 0) async throws -> Reply {
        try await request(.get, uri, logic: logic)
    }

    /// POSTs a push with an `Idempotency-Key` and returns logic's reply, whatever it is (a fault test retries on
    /// anything but code 0, with the same key).
    public func tryPush(_ uri: String, _ message: String, idempotencyKey: String, logic: Int = 0) async throws -> Reply {
        try await request(.post, uri, body: message, headers: [HTTPField.Name("Idempotency-Key")!: idempotencyKey], logic: logic)
    }

    /// POSTs a push and requires goim's `{"code":0,"message":""}`: logic acknowledged it (stored in JetStream).
    public func push(_ uri: String, _ message: String, logic: Int = 0) async throws {
        let reply = try await request(.post, uri, body: message, logic: logic)
        try #require(
            reply.status == 200 && reply.body == #"{"code":0,"message":""}"#,
            "push \(uri) was not accepted: HTTP \(reply.status) \(reply.body)")
    }
}

/// Polls `condition` every 50 ms until it holds; fails with `what` after `timeout` (a bound for slow machines,
/// never a timing assertion).
public func eventually(
    _ what: @autoclosure () -> String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if (try? await condition()) == true { return }
        if ContinuousClock.now >= deadline {
            throw StackTestError("timed out waiting for: \(what())")
        }
        try await Task.sleep(for: .milliseconds(50))
    }
}

public struct StackTestError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
