import GoIMConfig
import Logging
import Registry
import ServiceLifecycle
import Primitives
import Synchronization

/// One live comet as job sees it: its client and the limit on concurrent calls to it.
public final class CometEndpoint: Sendable {
    public let hostname: String
    public let rpcAddress: String
    let rpc: any CometRPC
    /// `comet.routineSize` calls at a time (goim: 32 workers per comet).
    let permits: AsyncSemaphore
    /// Rooms with members there, as last reported by its `Rooms` RPC; nil until known (or after the
    /// call failed), which means "send it everything".
    let rooms = Mutex<Set<String>?>(nil)

    init(hostname: String, rpcAddress: String, rpc: any CometRPC, concurrency: Int) {
        self.hostname = hostname
        self.rpcAddress = rpcAddress
        self.rpc = rpc
        self.permits = AsyncSemaphore(permits: concurrency)
    }

    /// Runs `body` with one of this comet's call permits.
    func call(_ body: (any CometRPC) async throws -> Void) async throws {
        try await permits.acquire()
        do {
            try await body(rpc)
            permits.release()
        } catch {
            permits.release()
            throw error
        }
    }

    func mayHave(room: String) -> Bool {
        rooms.withLock { $0?.contains(room) ?? true }
    }
}

/// Which comets get a room push.
public enum RoomTargets: String, Sendable, CaseIterable {
    /// Every live comet (goim's behaviour, and the default): a comet whose first member of a room
    /// joined a moment ago cannot miss a message.
    case all
    /// Only comets whose last `Rooms` answer lists the room (plus comets whose rooms are not known
    /// yet). Fewer calls when rooms live on few comets, but a member who joins a room on a comet
    /// that had nobody there misses what is sent until the next `Rooms` refresh.
    case rooms
}

/// The comets of the cluster registry, with a gRPC client each, kept in step with the registry.
///
/// A comet is added as soon as the registry lists it and removed once it has been missing from
/// the registry for longer than `grace` (a live comet rewrites its record every `registry.refresh`,
/// so one that is missing longer is gone; a Redis restart that empties the registry for a moment does
/// not drop every comet). As a `Service` it polls the registry and runs the clients' connections.
public final class CometPool: Service, Sendable {
    public struct Settings: Sendable {
        /// Concurrent calls per comet (`comet.routineSize`).
        public var concurrency: Int = 32
        /// How often the registry is read.
        public var refreshInterval: Duration = .seconds(2)
        /// How long a comet may be missing from the registry before it is dropped, and how long a
        /// push waits for an unknown comet (or for any comet) to appear.
        public var grace: Duration = .seconds(10)
        /// A comet missing from the registry for longer than `grace` is kept while it still answers: a call to it
        /// succeeded within this window and it is not stuck. Redis restarted without its data, or a comet whose
        /// registry writes time out on an overloaded machine, must not cost its clients their pushes.
        public var keepAnswering: Duration = .seconds(30)
        public var roomTargets: RoomTargets = .all
        /// How often each comet's `Rooms` is asked (only with `roomTargets == .rooms`).
        public var roomsRefresh: Duration = .seconds(1)

        public init() {}
    }

    struct Member {
        var comet: CometEndpoint
        var lastSeen: ContinuousClock.Instant
    }

    struct State {
        var members: [String: Member] = [:]
        /// Since when there is no comet at all (start-up counts as "none yet").
        var emptySince: ContinuousClock.Instant? = .now
        /// Hostnames asked for but not in the registry, since when.
        var missingSince: [String: ContinuousClock.Instant] = [:]
        var refreshRequested = false
        /// When the last successful registry read was applied.
        var lastRead: ContinuousClock.Instant?
        var stopped = false
    }

    let settings: Settings
    let source: @Sendable () async throws -> [CometInstanceAddress]
    let connector: CometConnector
    let logger: Logger
    /// How each comet answers calls: a comet missing from the registry that still answers is kept (Redis lost the
    /// registry and the comet has not written its record again yet), and delivery skips stuck comets.
    let health: CometHealth
    private let state = Mutex(State())
    private let started: AsyncStream<CometEndpoint>
    private let startedContinuation: AsyncStream<CometEndpoint>.Continuation

    /// - Parameters:
    ///   - source: reads the registry (`CometRegistry.instances()` in production).
    ///   - connector: makes a comet's client.
    public convenience init(
        settings: Settings, logger: Logger, connector: @escaping CometConnector,
        source: @escaping @Sendable () async throws -> [CometInstanceAddress]
    ) {
        self.init(settings: settings, logger: logger, connector: connector, health: nil, source: source)
    }

    ///   - health: shared with delivery; a fresh one (default thresholds) when nil.
    init(
        settings: Settings, logger: Logger, connector: @escaping CometConnector, health: CometHealth?,
        source: @escaping @Sendable () async throws -> [CometInstanceAddress]
    ) {
        self.settings = settings
        let defaults = JobConfiguration().comet
        self.health = health ?? CometHealth(skipAfter: defaults.skipAfter, callTimeout: defaults.timeout)
        self.logger = logger
        self.connector = connector
        self.source = source
        (started, startedContinuation) = AsyncStream.makeStream(of: CometEndpoint.self)
    }

    /// A pool fed by the Redis cluster registry, with the default `CometHealth` thresholds.
    public convenience init(settings: Settings, registry: CometRegistry, logger: Logger, connector: @escaping CometConnector) {
        self.init(settings: settings, registry: registry, logger: logger, connector: connector, health: nil)
    }

    convenience init(
        settings: Settings, registry: CometRegistry, logger: Logger, connector: @escaping CometConnector, health: CometHealth?
    ) {
        self.init(settings: settings, logger: logger, connector: connector, health: health) {
            try await registry.instances().map { CometInstanceAddress(hostname: $0.hostname, rpcAddress: $0.rpcAddress) }
        }
    }

    // MARK: - Lookups

    /// The comet named `hostname`, if the registry lists it now.
    public func comet(_ hostname: String) -> CometEndpoint? {
        state.withLock { $0.members[hostname]?.comet }
    }

    /// Every live comet, sorted by hostname.
    public var comets: [CometEndpoint] {
        state.withLock { state in state.members.values.map(\.comet) }.sorted { $0.hostname < $1.hostname }
    }

    /// The comet named `hostname`; when unknown, waits (refreshing the registry) until it appears
    /// or it has been missing for `grace`. Once that long missing, the answer comes from a registry
    /// read at most `freshness` old. Nil means the comet is not in the registry.
    public func resolve(_ hostname: String) async -> CometEndpoint? {
        if let comet = comet(hostname) { return comet }
        let deadline = state.withLock { state -> ContinuousClock.Instant in
            if state.missingSince.count > 10_000 { state.missingSince.removeAll() }
            let since = state.missingSince[hostname] ?? .now
            state.missingSince[hostname] = since
            return since + settings.grace
        }
        return await wait(until: deadline) { self.comet(hostname) }
    }

    /// Every live comet; when there is none, waits (refreshing the registry) until one appears or
    /// there has been none for `grace` (then answers from a fresh registry read). Empty means no
    /// comet is registered.
    public func resolveAll() async -> [CometEndpoint] {
        let comets = comets
        if !comets.isEmpty { return comets }
        let deadline = state.withLock { ($0.emptySince ?? .now) + settings.grace }
        return await wait(until: deadline) { () -> [CometEndpoint]? in
            let comets = self.comets
            return comets.isEmpty ? nil : comets
        } ?? []
    }

    /// The comets a room push goes to (see `RoomTargets`). `nil` when there is no comet at all.
    func roomTargets(_ room: String) async -> [CometEndpoint]? {
        let all = await resolveAll()
        if all.isEmpty { return nil }
        switch settings.roomTargets {
        case .all: return all
        case .rooms: return all.filter { $0.mayHave(room: room) }
        }
    }

    /// How old a registry read may be to answer "not there" once the grace period is over: a comet
    /// that registered a moment ago is found, and a flood of pushes for a missing comet shares one read.
    static let freshness: Duration = .milliseconds(250)

    private func wait<T>(until deadline: ContinuousClock.Instant, _ probe: () -> T?) async -> T? {
        while ContinuousClock.now < deadline && !Task.isCancelled {
            requestRefresh()
            try? await Task.sleep(for: min(.milliseconds(50), deadline - .now))
            if let value = probe() { return value }
        }
        // Past the grace period: answer from a recent registry read.
        let asked = ContinuousClock.now
        let stale = state.withLock { state in state.lastRead.map { asked - $0 > Self.freshness } ?? true }
        if stale {
            requestRefresh()
            let limit = asked + .seconds(1)
            while ContinuousClock.now < limit && !Task.isCancelled {
                if state.withLock({ state in state.lastRead.map { $0 >= asked } ?? false }) { break }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        return probe()
    }

    /// Asks the watcher to read the registry now rather than at its next tick.
    func requestRefresh() {
        state.withLock { $0.refreshRequested = true }
    }

    // MARK: - Keeping in step with the registry

    /// Applies one registry read.
    func apply(_ instances: [CometInstanceAddress], now: ContinuousClock.Instant = .now) {
        var added: [CometEndpoint] = []
        var removed: [CometEndpoint] = []
        state.withLock { state in
            guard !state.stopped else { return }
            state.lastRead = .now
            for instance in instances {
                state.missingSince[instance.hostname] = nil
                if var member = state.members[instance.hostname], member.comet.rpcAddress == instance.rpcAddress {
                    member.lastSeen = now
                    state.members[instance.hostname] = member
                    continue
                }
                let rpc: any CometRPC
                do {
                    rpc = try connector(instance)
                } catch {
                    logger.error(
                        "cannot make a client for a comet of the registry",
                        metadata: ["goim.server": "\(instance.hostname)", "error": "\(error)"])
                    continue
                }
                if let old = state.members[instance.hostname] { removed.append(old.comet) }
                let comet = CometEndpoint(
                    hostname: instance.hostname, rpcAddress: instance.rpcAddress, rpc: rpc,
                    concurrency: settings.concurrency)
                state.members[instance.hostname] = Member(comet: comet, lastSeen: now)
                added.append(comet)
            }
            for (hostname, member) in state.members where now - member.lastSeen > settings.grace {
                // Still answering calls: the registry lost it (Redis restarted without its data, or its record expired
                // while its writes timed out), the comet did not. Dropping it would lose its clients' pushes (and fail
                // the calls in flight) until it registers again. A killed comet refuses calls and is stuck soon.
                guard !health.answered(hostname, within: max(settings.grace, settings.keepAnswering), now: now) else { continue }
                state.members[hostname] = nil
                removed.append(member.comet)
            }
            if state.members.isEmpty {
                if state.emptySince == nil { state.emptySince = now }
            } else {
                state.emptySince = nil
            }
        }
        for comet in added {
            logger.info(
                "comet added", metadata: ["goim.server": "\(comet.hostname)", "goim.rpc": "\(comet.rpcAddress)"])
            startedContinuation.yield(comet)
        }
        for comet in removed {
            logger.info("comet removed", metadata: ["goim.server": "\(comet.hostname)", "goim.rpc": "\(comet.rpcAddress)"])
            comet.rpc.shutdown()
        }
    }

    /// Reads the registry once; a failed read keeps the comets known so far.
    func refresh() async {
        do {
            apply(try await source())
        } catch {
            logger.warning("cannot read the cluster registry; keeping the comets known so far", metadata: ["error": "\(error)"])
        }
    }

    func refreshRooms() async {
        await withDiscardingTaskGroup { group in
            for comet in comets {
                group.addTask {
                    do {
                        let rooms = try await comet.rpc.rooms()
                        comet.rooms.withLock { $0 = rooms }
                    } catch {
                        comet.rooms.withLock { $0 = nil }
                        self.logger.debug("Rooms failed; sending that comet every room", metadata: [
                            "goim.server": "\(comet.hostname)", "error": "\(error)",
                        ])
                    }
                }
            }
        }
    }

    /// Polls the registry (and comets' rooms) and runs the comets' connections until graceful
    /// shutdown; then shuts every client down and waits for their calls to end.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                await cancelWhenGracefulShutdown {
                    await withDiscardingTaskGroup { loops in
                        loops.addTask { await self.pollRegistry() }
                        if self.settings.roomTargets == .rooms {
                            loops.addTask { await self.pollRooms() }
                        }
                    }
                }
                let comets = self.state.withLock { state -> [CometEndpoint] in
                    state.stopped = true
                    defer { state.members.removeAll() }
                    return state.members.values.map(\.comet)
                }
                for comet in comets { comet.rpc.shutdown() }
                self.startedContinuation.finish()
            }
            for await comet in started {
                group.addTask { await comet.rpc.run() }
            }
        }
    }

    private func pollRegistry() async {
        var nextRefresh = ContinuousClock.now
        while !Task.isCancelled {
            let requested = state.withLock { state in
                defer { state.refreshRequested = false }
                return state.refreshRequested
            }
            if requested || ContinuousClock.now >= nextRefresh {
                nextRefresh = .now + settings.refreshInterval
                await refresh()
            }
            try? await Task.sleep(for: .milliseconds(25))
        }
    }

    private func pollRooms() async {
        while !Task.isCancelled {
            await refreshRooms()
            try? await Task.sleep(for: settings.roomsRefresh)
        }
    }
}
