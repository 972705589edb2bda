import Foundation
import GoIMConfig
import GoIMRPC
import Logging
import NIOCore
import NIOPosix
import Registry
import ServiceLifecycle
import Synchronization

/// goim's weighted comet balancer (reference §4.5), as a value type.
///
/// Fixes: offline comets are never kept (and, as in goim, neither are instances without counts: every
/// registry record has them); an update is always accepted, so a shrinking cluster stops advertising dead
/// comets at once (goim bug 28); empty public addresses are dropped and an empty node list falls back to
/// `node.defaultDomain` (bug 29); the region boost applies only when the client's region is known, never
/// to comets registered without a region (bug 27).
struct WeightedBalancer: Sendable {
    struct Node: Sendable, Equatable {
        var hostname: String
        var region: String
        var fixedWeight: Int64
        /// Starts at the comet's reported connection count; the balancer adds one per client it sends there.
        var currentConns: Int64
        var currentWeight: Int64 = 0
        var addrs: [String]
        var updatedAt: Int64
    }

    static let minWeight: Int64 = 1
    static let maxWeight: Int64 = 1 << 20
    static let advertised = 5

    private(set) var nodes: [Node] = []
    private(set) var totalWeight: Int64 = 0
    private(set) var totalConns: Int64 = 0

    /// Replaces the node set with the online comets of `instances`. A comet whose record did not change
    /// since the last update keeps its counter (goim: same hostname and `latest_timestamp`).
    mutating func update(_ instances: [CometInstance]) {
        var previous: [String: Node] = [:]
        for node in nodes { previous[node.hostname] = node }
        nodes = instances.filter { !$0.offline }.map { instance in
            if let old = previous[instance.hostname], old.updatedAt == instance.updatedAt { return old }
            return Node(
                hostname: instance.hostname, region: instance.region, fixedWeight: Int64(instance.weight),
                currentConns: Int64(instance.connCount),
                addrs: instance.addrs.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty },
                updatedAt: instance.updatedAt)
        }
        totalWeight = nodes.reduce(0) { $0 + $1.fixedWeight }
        totalConns = nodes.reduce(0) { $0 + $1.currentConns }
    }

    /// One balancer pick: the (at most 5) best comets, highest weight first; counts one connection for the first.
    mutating func pick(clientRegion: String, regionWeight: Double) -> [Node] {
        guard !nodes.isEmpty else { return [] }
        for index in nodes.indices {
            let gain = !clientRegion.isEmpty && nodes[index].region == clientRegion ? regionWeight : 1
            nodes[index].currentWeight = Self.weight(
                fixedWeight: nodes[index].fixedWeight, currentConns: nodes[index].currentConns,
                totalWeight: totalWeight, totalConns: totalConns, gain: gain)
        }
        // goim's sort.Slice is not stable; ties go by hostname here so that replies are reproducible.
        nodes.sort { ($0.currentWeight, $1.hostname) > ($1.currentWeight, $0.hostname) }
        nodes[0].currentConns += 1
        totalConns += 1
        return Array(nodes.prefix(Self.advertised))
    }

    /// goim's `calculateWeight`, with a guard against a zero total weight.
    static func weight(fixedWeight: Int64, currentConns: Int64, totalWeight: Int64, totalConns: Int64, gain: Double) -> Int64 {
        guard totalConns > 0 else { return 0 }
        let gained = Double(fixedWeight) * gain
        let total = totalWeight + Int64(gained) - fixedWeight
        let weightRatio = total > 0 ? gained / Double(total) : 0
        let connRatio = Double(currentConns) / Double(totalConns) * 0.5
        let diff = weightRatio - connRatio
        let multiple = diff * Double(totalConns)
        let floor = multiple.rounded(.down)
        // Nearest integer, an exact .5 rounding down (goim: floor - multiple >= -0.5).
        let rounded = floor - multiple >= -0.5 ? floor : multiple.rounded(.up)
        var weight = Int64(gained + rounded)
        if diff < 0 {
            weight = max(weight, minWeight)
        } else {
            weight = min(weight, maxWeight)
        }
        return weight
    }
}

/// What Logic knows about the cluster, shared by the HTTP API and the gRPC service: the registry's comets
/// (for `/goim/nodes/*` and the online totals), the balancer, and the cluster-wide room counts. Replaced as a
/// whole by `OnlineRefresher` under a lock (goim read and wrote these without one, bug 21).
public final class ClusterState: Sendable {
    struct Snapshot: Sendable {
        var instances: [CometInstance] = []
        var balancer = WeightedBalancer()
        var roomCount: [String: Int32] = [:]
    }

    private let state = Mutex(Snapshot())
    let node: LogicConfiguration.Node
    let backoff: LogicConfiguration.Backoff
    let regions: [String: [String]]

    public init(node: LogicConfiguration.Node, backoff: LogicConfiguration.Backoff, regions: [String: [String]]) {
        self.node = node
        self.backoff = backoff
        self.regions = regions
    }

    /// Every comet in the registry (online or not).
    public var instances: [CometInstance] { state.withLock { $0.instances } }

    /// The comets goim would keep: online ones.
    public var onlineInstances: [CometInstance] { state.withLock { $0.instances.filter { !$0.offline } } }

    /// Cluster-wide room counts (room key → connections), as last recomputed.
    public var roomCount: [String: Int32] { state.withLock { $0.roomCount } }

    public func update(instances: [CometInstance]) {
        state.withLock { state in
            state.instances = instances
            state.balancer.update(instances)
        }
    }

    public func update(roomCount: [String: Int32]) {
        state.withLock { state in
            state.roomCount = roomCount
        }
    }

    /// `/goim/online/total`: sums of the online comets' registry counts.
    public var totals: (connCount: Int, ipCount: Int) {
        state.withLock { state in
            state.instances.filter { !$0.offline }.reduce(into: (connCount: 0, ipCount: 0)) { totals, instance in
                totals.connCount += instance.connCount
                totals.ipCount += instance.ipCount
            }
        }
    }

    /// The region of a client. goim's province lookup is a stub that always answers "" (bug 27); there is
    /// no IP database here either, so the region is unknown and the region boost never applies.
    func region(clientIP: String) -> String { "" }

    /// `/goim/nodes/weighted` and the `Nodes` RPC.
    public func nodes(platform: String, clientIP: String) -> Goim_Logic_NodesReply {
        let clientRegion = region(clientIP: clientIP)
        let picked = state.withLock { $0.balancer.pick(clientRegion: clientRegion, regionWeight: node.regionWeight) }
        var reply = Goim_Logic_NodesReply()
        reply.domain = node.defaultDomain
        reply.tcpPort = Int32(clamping: node.tcpPort)
        reply.wsPort = Int32(clamping: node.wsPort)
        reply.wssPort = Int32(clamping: node.wssPort)
        reply.heartbeat = Int32(clamping: node.heartbeat.components.seconds)
        reply.heartbeatMax = Int32(clamping: node.heartbeatMax)
        var backoffReply = Goim_Logic_Backoff()
        backoffReply.maxDelay = Int32(clamping: backoff.maxDelay)
        backoffReply.baseDelay = Int32(clamping: backoff.baseDelay)
        backoffReply.factor = Float(backoff.factor)
        backoffReply.jitter = Float(backoff.jitter)
        reply.backoff = backoffReply
        if platform == "web" {
            reply.nodes = picked.map { $0.hostname + node.hostDomain }
        } else {
            reply.nodes = picked.flatMap(\.addrs)
        }
        if reply.nodes.isEmpty { reply.nodes = [node.defaultDomain] }
        return reply
    }
}

/// Recomputes `ClusterState` every `online.refresh` (and once at start): reads the registry, then every
/// registered comet's `ol_<hostname>` in one round trip, drops (and deletes) counts older than
/// `online.staleAfter`, and sums the rest per room. A failed round keeps the previous state.
///
/// It also removes the sessions of a comet that left the registry without a graceful shutdown (killed, machine
/// lost): goim left them until `redis.expire` (30 min), so mids pushes kept going to a dead comet and online counts
/// by key stayed wrong. Only comets seen since this logic started are noticed; others' sessions expire as in goim.
/// A comet whose gRPC port still accepts connections is alive (Redis lost the registry, or its registry writes time
/// out on an overloaded machine) and keeps its sessions: purging them would cost its clients their mids pushes until
/// their next heartbeats.
public struct OnlineRefresher: Service {
    let registry: CometRegistry
    let store: any OnlineStore
    let routing: (any RoutingStore)?
    let cluster: ClusterState
    let refresh: Duration
    let staleAfter: Duration
    let logger: Logger
    /// Whether the comet at a gRPC address (`host:port`) is still there.
    let isAlive: @Sendable (String) async -> Bool
    /// Sessions removed per round trip when purging a dead comet's.
    static let purgeBatch = 1000

    public init(
        registry: CometRegistry, store: any OnlineStore, routing: (any RoutingStore)? = nil, cluster: ClusterState,
        refresh: Duration, staleAfter: Duration, logger: Logger,
        isAlive: @escaping @Sendable (String) async -> Bool = CometProbe.acceptsConnections
    ) {
        self.registry = registry
        self.store = store
        self.routing = routing
        self.cluster = cluster
        self.refresh = refresh
        self.staleAfter = staleAfter
        self.logger = logger
        self.isAlive = isAlive
    }

    /// The comets this logic has seen (with the gRPC address each registered last), and since when each missing one
    /// has been missing.
    struct Watch: Sendable {
        var known: [String: String] = [:]
        var missingSince: [String: ContinuousClock.Instant] = [:]
        /// Missing comets found alive, so that it is logged once per absence.
        var keptAlive: Set<String> = []
    }

    /// Purges the sessions of every known comet that has been missing from the registry for a whole `registry.ttl`
    /// on top of the TTL its record already outlived, unless its gRPC port still accepts connections. The wait keeps
    /// a comet that is only re-registering (Redis restarted and lost the registry: every comet writes its record
    /// again within `registry.refresh`) from losing the sessions its clients' heartbeats are re-creating meanwhile;
    /// the probe covers a comet that takes longer (its writes time out), and one found alive is checked again after
    /// another `registry.ttl`.
    /// - Parameter live: the registered comets, hostname to gRPC address.
    func purgeGone(_ watch: inout Watch, live: [String: String], now: ContinuousClock.Instant = .now) async {
        watch.known.merge(live) { $1 }
        for server in live.keys {
            watch.missingSince[server] = nil
            if watch.keptAlive.remove(server) != nil {
                logger.info("comet back in the registry", metadata: ["goim.server": "\(server)"])
            }
        }
        guard let routing else { return }
        var due: [(server: String, address: String)] = []
        for (server, address) in watch.known where live[server] == nil {
            let since = watch.missingSince[server] ?? now
            watch.missingSince[server] = since
            if now - since >= registry.ttl { due.append((server, address)) }
        }
        for (server, address) in due.sorted(by: { $0.server < $1.server }) {
            if await isAlive(address) {
                watch.missingSince[server] = now
                if watch.keptAlive.insert(server).inserted {
                    logger.warning(
                        "comet missing from the registry, but its gRPC port answers: keeping its sessions",
                        metadata: ["goim.server": "\(server)", "goim.rpc": "\(address)"])
                }
                continue
            }
            watch.known[server] = nil
            watch.missingSince[server] = nil
            watch.keptAlive.remove(server)
            do {
                let registry = self.registry
                let purged = try await routing.purgeSessions(server: server, batch: Self.purgeBatch) {
                    try await registry.instance(hostname: server) == nil
                }
                logger.notice(
                    "comet left the registry without deregistering: removed its sessions",
                    metadata: ["goim.server": "\(server)", "goim.sessions": "\(purged)"])
            } catch {
                logger.warning("purging a gone comet's sessions failed; they expire with redis.expire",
                    metadata: ["goim.server": "\(server)", "error": "\(error)"])
            }
        }
    }

    /// One round; throws when Redis fails. Returns the live comets: hostname to gRPC address.
    @discardableResult
    public func refreshNow(now: Int64 = Int64(Date().timeIntervalSince1970)) async throws -> [String: String] {
        let instances: [CometInstance]
        do {
            instances = try await registry.instances()
        } catch {
            throw LogicError.redis(error)
        }
        cluster.update(instances: instances)
        let servers = instances.map(\.hostname)
        let onlines = try await store.loadOnline(servers: servers)
        var aggregate: [String: Int32] = [:]
        var stale: [String] = []
        for (server, online) in zip(servers, onlines) {
            guard let online else { continue }
            guard now - online.updated <= staleAfter.components.seconds else {
                stale.append(server)
                continue
            }
            for (room, count) in online.roomCount {
                aggregate[room, default: 0] = aggregate[room, default: 0].addingReportingOverflow(count).overflow
                    ? Int32.max : aggregate[room, default: 0] + count
            }
        }
        if !stale.isEmpty {
            logger.info("dropping stale online counts", metadata: ["goim.servers": "\(stale)"])
            try await store.deleteOnline(servers: stale)
        }
        cluster.update(roomCount: aggregate)
        return Dictionary(instances.map { ($0.hostname, $0.rpcAddress) }, uniquingKeysWith: { _, last in last })
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var failing = false
            var watch = Watch()
            while !Task.isCancelled {
                do {
                    let live = try await refreshNow()
                    await purgeGone(&watch, live: live)
                    if failing { logger.info("online counts refreshed again") }
                    failing = false
                } catch {
                    if !failing { logger.warning("online refresh failed; keeping the last counts", metadata: ["error": "\(error)"]) }
                    failing = true
                }
                try? await Task.sleep(for: refresh)
            }
        }
    }
}

/// Whether a comet is still there when the registry says it is not.
public enum CometProbe {
    /// Whether a TCP connection to `address` (`host:port`, the comet's gRPC port) is accepted within 1 s. A killed
    /// comet's port refuses at once; a comet on a lost machine times out. A comet that is alive but cut off from this
    /// logic counts as gone, as it would without the probe.
    @Sendable public static func acceptsConnections(_ address: String) async -> Bool {
        guard let target = HostPort(address, defaultHost: "127.0.0.1") else { return false }
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(1))
        do {
            let channel = try await bootstrap.connect(host: target.host, port: target.port).get()
            try? await channel.close()
            return true
        } catch {
            return false
        }
    }
}
