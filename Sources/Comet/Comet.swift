import GoIMConfig
import GoIMProtocol
import GoIMRPC
import Logging
import LogicClient
import NIOCore
import NIOPosix
import Atomics
import Foundation
import Primitives
import Synchronization

/// Counters of rare events, shared by every loop (the per-recipient counters live in `LoopState`).
final class Counters: Sendable {
    let accepted = ManagedAtomic<Int>(0)
    let refusedPerIP = ManagedAtomic<Int>(0)
    let refusedConnectRate = ManagedAtomic<Int>(0)
    let refusedCap = ManagedAtomic<Int>(0)
    let authenticated = ManagedAtomic<Int>(0)
    let authFailures = ManagedAtomic<Int>(0)
    let handshakeTimeouts = ManagedAtomic<Int>(0)
    let heartbeatTimeouts = ManagedAtomic<Int>(0)
    let credentialExpiries = ManagedAtomic<Int>(0)
    let credentialRefreshes = ManagedAtomic<Int>(0)
    let credentialRefreshFailures = ManagedAtomic<Int>(0)
    let protocolErrors = ManagedAtomic<Int>(0)
    let watchLimitCloses = ManagedAtomic<Int>(0)
    let ignoredBeforeAuth = ManagedAtomic<Int>(0)
    let replaced = ManagedAtomic<Int>(0)
    let slowConsumersClosed = ManagedAtomic<Int>(0)
    let slowConsumerEpisodes = ManagedAtomic<Int>(0)
    let disconnects = ManagedAtomic<Int>(0)
    let logicErrors = ManagedAtomic<Int>(0)
    /// Room history: messages dropped as already passed on, offsets skipped (history no longer had them), gaps read
    /// from history, client recoveries (complete, incomplete, failed: no answer from logic).
    let offsetDuplicates = ManagedAtomic<Int>(0)
    /// Messages that arrived ahead of a missing offset and waited for it.
    let offsetsHeld = ManagedAtomic<Int>(0)
    let offsetsSkipped = ManagedAtomic<Int>(0)
    let gapFills = ManagedAtomic<Int>(0)
    let recoveries = ManagedAtomic<Int>(0)
    let recoveriesIncomplete = ManagedAtomic<Int>(0)
    let recoveryFailures = ManagedAtomic<Int>(0)
    /// Push RPCs received (`PushMsg`, `Broadcast`, `BroadcastRoom`): one per call, whatever the number of recipients.
    let rpcPushMsg = ManagedAtomic<Int>(0)
    let rpcBroadcast = ManagedAtomic<Int>(0)
    let rpcBroadcastRoom = ManagedAtomic<Int>(0)
    /// `Users/Push` calls (swift-goim: pushes to users with history).
    let rpcPushUsers = ManagedAtomic<Int>(0)
    /// Pushes delivered over all event loops, as of the last online report (the registry record carries it).
    let deliveredSnapshot = ManagedAtomic<Int>(0)
    /// `ConnectionHandler` objects alive (a leak check: it falls back to 0 once every client is gone).
    let liveHandlers = ManagedAtomic<Int>(0)

    func increment(_ counter: KeyPath<Counters, ManagedAtomic<Int>>) {
        self[keyPath: counter].wrappingIncrement(ordering: .relaxed)
    }
}

/// A snapshot of a comet's counters.
public struct CometStatistics: Sendable, Equatable {
    /// Authenticated connections (goim's `conn_count`).
    public var connections: Int
    /// Distinct remote IPs with an open connection (goim's `ip_count`).
    public var distinctIPs: Int
    /// Open connections, authenticated or not.
    public var openConnections: Int
    /// Rooms with at least one member on this comet.
    public var rooms: Int
    public var accepted: Int
    public var refusedPerIPLimit: Int
    /// Connections refused because their IP connected faster than `limits.connectRatePerIP`.
    public var refusedConnectRate: Int = 0
    /// Connections refused because the comet held `limits.maxConnections` (or its descriptor-derived cap).
    public var refusedConnectionCap: Int = 0
    public var authenticated: Int
    public var authFailures: Int
    public var handshakeTimeouts: Int
    public var heartbeatTimeouts: Int
    /// Connections closed because their credential (a JWT's `exp`) ran out without a refresh.
    public var credentialExpiries: Int = 0
    /// Op 18 refreshes that Logic accepted, and those it refused (or could not answer).
    public var credentialRefreshes: Int = 0
    public var credentialRefreshFailures: Int = 0
    /// Connections closed for malformed input (bad header, oversized packet, bad WebSocket framing).
    public var protocolErrors: Int
    /// Connections closed for watching more than `protocol.maxWatchOps` operations.
    public var watchLimitCloses: Int = 0
    /// Packets other than op 7 received before authentication, ignored as goim does.
    public var ignoredBeforeAuth: Int
    /// Connections closed because the same key authenticated again.
    public var replaced: Int
    public var slowConsumersClosed: Int
    /// Times a connection became unwritable under the `drop` policy.
    public var slowConsumerEpisodes: Int
    /// Pushes written, one per recipient.
    public var delivered: Int
    /// Pushes skipped for slow consumers.
    public var dropped: Int
    /// Logic `Disconnect` calls made.
    public var disconnects: Int
    /// Logic calls that failed.
    public var logicErrors: Int
    /// Connection objects still in memory: equals `openConnections` once closes have settled (else a leak).
    public var connectionObjects: Int = 0
    /// Room history (docs/history.md): messages with offsets dropped as already passed on, offsets skipped because
    /// history no longer had them, gaps read from history, and client recoveries complete, incomplete or failed.
    public var offsetDuplicates: Int = 0
    public var offsetsHeld: Int = 0
    public var offsetsSkipped: Int = 0
    public var gapFills: Int = 0
    public var recoveries: Int = 0
    public var recoveriesIncomplete: Int = 0
    public var recoveryFailures: Int = 0
}

/// The state one comet shares between its event loops, its gRPC service and its background services.
final class Comet: Sendable {
    /// Used when Logic's `ConnectReply.heartbeat` is not positive: goim's example value, 4 min × 2.
    static let defaultHeartbeat = TimeAmount.minutes(8)

    let configuration: CometConfiguration
    /// This comet's server id (`env.host`).
    let server: String
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let loops: [NIOLoopBoundBox<LoopState>]
    private let loopIndex: [ObjectIdentifier: Int]
    let buckets: Buckets
    let rooms = RoomDirectory()
    /// Every authenticated user (mid ≠ 0) with its connections, by mid: where pushes to users with history go
    /// (`history.mids`). Kept apart from `rooms`: users are never reported as rooms.
    let users = RoomDirectory()
    let admission: ConnectionAdmission
    var ips: IPTable { admission.ips }
    let logic: any LogicAPI
    let logicCalls: LogicCalls
    let whitelist: Whitelist
    let counters = Counters()
    let limits: PacketLimits
    let maxWatchOps: Int
    /// One log line per second per kind of refused connection.
    private let refusalLog = KeyedRateLimiter(rate: 1, burst: 1, maxKeys: 8)
    let closeSlowConsumers: Bool
    let handshakeTimeout: TimeAmount
    let sweepInterval: TimeAmount
    private let refreshRange: ClosedRange<Int64>
    /// `protocol.sessionRewriteSpread` (at most the shortest session refresh), in nanoseconds.
    private let rewriteSpread: Int64
    private let nextID = Atomic<UInt64>(0)
    private let sweeps = Mutex<[RepeatedTask]>([])

    init(
        configuration: CometConfiguration, group: MultiThreadedEventLoopGroup, logic: any LogicAPI, logger: Logger,
        sweepInterval: Duration, disconnectConcurrency: Int
    ) throws {
        self.configuration = configuration
        self.server = configuration.env.host
        self.logger = logger
        self.group = group
        self.logic = logic
        self.buckets = Buckets(size: configuration.bucket.size)
        self.admission = ConnectionAdmission(limits: configuration.limits)
        self.logicCalls = LogicCalls(limit: disconnectConcurrency)
        self.whitelist = try Whitelist(
            mids: configuration.whitelist.whitelist, path: configuration.whitelist.whiteLog, logger: logger)
        self.limits = PacketLimits(maxBodySize: configuration.proto.maxBodySize)
        self.maxWatchOps = configuration.proto.maxWatchOps
        self.closeSlowConsumers = configuration.proto.slowConsumerPolicy != "drop"
        self.handshakeTimeout = TimeAmount(configuration.proto.handshakeTimeout)
        self.sweepInterval = TimeAmount(sweepInterval)
        let low = TimeAmount(configuration.proto.sessionRefreshMin).nanoseconds
        let high = TimeAmount(configuration.proto.sessionRefreshMax).nanoseconds
        self.refreshRange = low...max(low, high)
        self.rewriteSpread = min(TimeAmount(configuration.proto.sessionRewriteSpread).nanoseconds, low)
        var loops: [NIOLoopBoundBox<LoopState>] = []
        var index: [ObjectIdentifier: Int] = [:]
        for loop in group.makeIterator() {
            index[ObjectIdentifier(loop)] = loops.count
            loops.append(.makeBoxSendingValue(LoopState(eventLoop: loop, counters: counters, index: loops.count), eventLoop: loop))
        }
        self.loops = loops
        self.loopIndex = index
    }

    /// The state of the event loop the caller runs on.
    func loopState(for eventLoop: any EventLoop) -> LoopState {
        guard let index = loopIndex[ObjectIdentifier(eventLoop)] else {
            preconditionFailure("channel on an event loop outside the comet's group")
        }
        return loops[index].value
    }

    func nextConnectionID() -> UInt64 {
        nextID.add(1, ordering: .relaxed).newValue
    }

    /// A fresh random interval between two Logic `Heartbeat` calls of one connection (goim: 10–30 min).
    func randomSessionRefresh() -> TimeAmount {
        .nanoseconds(Int64.random(in: refreshRange))
    }

    /// Bumped when Redis has lost this comet's sessions (its registry record was gone): each connection whose
    /// generation differs calls Logic `Heartbeat` at its client's next heartbeat, which writes its session again,
    /// instead of at its next session refresh (10–20 min away by default). The clients' own heartbeat intervals
    /// spread those calls out.
    let sessionGeneration = ManagedAtomic<Int>(0)

    /// Has every connection write its session again at its next heartbeat.
    func rewriteSessions() {
        sessionGeneration.wrappingIncrement(ordering: .relaxed)
    }

    /// How long a connection waits, at random, before writing its session again after `rewriteSessions()`: spreads a
    /// comet's sessions over `protocol.sessionRewriteSpread` (30 s) so that logic and Redis are not asked for all of
    /// them within one client heartbeat interval.
    func randomRewriteDelay() -> TimeAmount {
        .nanoseconds(Int64.random(in: 0...max(0, rewriteSpread)))
    }

    /// When a connection tries a failed Logic `Heartbeat` again: after 1 s, 2 s, 4 s, … (half to all of it, at random),
    /// at most the session refresh interval, so that a logic that is down or overloaded is not asked at every client
    /// heartbeat.
    func sessionRetryDelay(failures: Int) -> TimeAmount {
        let ceiling = min(Int64(1_000_000_000) << min(max(failures - 1, 0), 20), refreshRange.lowerBound)
        return .nanoseconds(Int64.random(in: ceiling / 2...max(ceiling / 2, ceiling)))
    }

    // MARK: accept

    /// Sets up the comet side of a newly accepted channel (on its event loop): per-IP limit, connection id,
    /// handshake deadline, sweep registration and the close hook. Nil when the per-IP limit refuses it.
    func accept(_ channel: any Channel, transport: TransportKind) -> ConnectionHandler? {
        accept(channel, transport: transport, loop: loopState(for: channel.eventLoop))
    }

    /// `accept` with the loop state given: unit tests run a connection on a test event loop outside the group.
    func accept(_ channel: any Channel, transport: TransportKind, loop state: LoopState) -> ConnectionHandler? {
        counters.increment(\.accepted)
        let ip = channel.remoteAddress?.ipAddress ?? "unknown"
        if let refusal = admission.admit(ip: ip) {
            refused(refusal, ip: ip, transport: transport)
            return nil
        }
        let handler = ConnectionHandler(
            comet: self, loop: state, channel: channel, id: nextConnectionID(), transport: transport, ip: ip,
            deadline: .now() + handshakeTimeout)
        state.add(handler)
        channel.closeFuture.assumeIsolated().whenComplete { _ in handler.closed() }
        return handler
    }

    /// Counts and logs a refused connection; logs at most once a second per kind, a flood must not flood the log.
    private func refused(_ refusal: ConnectionAdmission.Refusal, ip: String, transport: TransportKind) {
        let (counter, message, limit): (KeyPath<Counters, ManagedAtomic<Int>>, String, String) =
            switch refusal {
            case .cap:
                (\.refusedCap, "refused connection: the comet holds its maximum of connections", "\(admission.cap)")
            case .perIP:
                (\.refusedPerIP, "refused connection: per-IP connection limit reached", "\(configuration.limits.maxConnectionsPerIP)")
            case .rate:
                (\.refusedConnectRate, "refused connection: per-IP connect rate exceeded", "\(configuration.limits.connectRatePerIP)/s")
            }
        let count = counters[keyPath: counter].wrappingIncrementThenLoad(ordering: .relaxed)
        if refusalLog.take(message) == nil {
            logger.notice(
                "\(message)",
                metadata: ["goim.ip": "\(ip)", "goim.limit": "\(limit)", "goim.transport": "\(transport)", "goim.refused": "\(count)"])
        }
    }

    // MARK: timers

    /// Starts one repeating sweep per event loop.
    func startSweeps() {
        var tasks: [RepeatedTask] = []
        for box in loops {
            tasks.append(
                box.eventLoop.scheduleRepeatedTask(initialDelay: sweepInterval, delay: sweepInterval) { _ in
                    box.value.sweep(now: .now())
                })
        }
        sweeps.withLock { $0 = tasks }
    }

    func stopSweeps() {
        let tasks = sweeps.withLock { tasks in
            defer { tasks = [] }
            return tasks
        }
        for task in tasks { task.cancel() }
    }

    // MARK: pushes

    /// `PushMsg`: to each key's connection if it watches `operation`. Every key is tried (goim stopped at the
    /// first full queue: bug 17). Returns once each connection's event loop has written it (to the kernel, or to
    /// NIO's queue of a client that is behind), so the caller's success means "handed to the sockets".
    func push(keys: [String], operation: Int32, push: Push) async {
        var written: [EventLoopFuture<Void>] = []
        for key in keys {
            guard let entry = buckets.entry(for: key) else { continue }
            written.append(entry.eventLoop.submit { entry.handler.value.pushIfWatching(operation, push) })
        }
        guard let first = written.first else { return }
        try? await EventLoopFuture.andAllComplete(written, on: first.eventLoop).get()
    }

    /// `BroadcastRoom`: one hop to each event loop, which writes to its members of the room. Returns once every
    /// loop has written (to the kernel, or to NIO's queue of a client that is behind), so that a caller that keeps
    /// one call per room in flight (job) sees how busy this comet is and batches what arrives meanwhile, instead
    /// of piling pushes up in the event loops' task queues.
    func broadcastRoom(_ id: String, push: Push) async {
        guard rooms.info(for: id) != nil else { return }
        var written: [EventLoopFuture<Void>] = []
        written.reserveCapacity(loops.count)
        for (index, box) in loops.enumerated() {
            let local = index == 0 ? push : push.copy()
            written.append(box.eventLoop.submit {
                box.value.broadcastRoom(id, push: local)
            })
        }
        try? await EventLoopFuture.andAllComplete(written, on: loops[0].eventLoop).get()
    }

    /// `BroadcastRoom` of a room with history: the inner packets carry their offsets. They pass through the room's
    /// `RoomSequencer` (offset order, no duplicates), then each loop writes them to its members, with offsets to the
    /// clients that asked for them and goim's bytes to the others. A body that is not a run of packets with offsets
    /// is delivered as goim's job would have sent it.
    func broadcastRoom(_ id: String, epoch: String, proto: Goim_Protocol_Proto) async {
        guard let info = rooms.info(for: id) else { return }
        let body = ByteBuffer(bytes: proto.body)
        guard let packets = OffsetPackets.split(body), !packets.isEmpty else {
            logger.warning("BroadcastRoom with a history epoch but packets without offsets; delivered without ordering", metadata: [
                "goim.room": "\(id)"
            ])
            await broadcastRoom(id, push: Push(proto: proto))
            return
        }
        let sequencer = info.sequencer(maxHeld: configuration.history.maxHeld, counters: counters)
        var written: [EventLoopFuture<Void>] = []
        let fill = sequencer.accept(epoch: epoch, body: body, packets: packets) { run in
            written += enqueue(run, room: id)
        }
        if fill { scheduleGapFill(.room(id), sequencer) }
        guard let first = written.first else { return }
        try? await EventLoopFuture.andAllComplete(written, on: first.eventLoop).get()
    }

    /// `swiftgoim.comet.Users/Push`: one message to users with history, each with its own offset. Users without
    /// connections here are skipped; a user's messages pass through its own `RoomSequencer` (offset order, no
    /// duplicates, gaps read from history) exactly as a room's, then go to its connections that watch the operation.
    /// A user without an offset (job could not write its history) gets goim's bytes, unordered.
    func pushUsers(operation: Int32, body: Data, users targets: [Swiftgoim_Comet_UserOffset]) async {
        var written: [EventLoopFuture<Void>] = []
        var plain: Push?
        for target in targets {
            let id = String(target.mid)
            guard target.mid != 0, let info = users.info(for: id) else { continue }
            guard target.offset > 0, target.offset <= UInt64(Int32.max), !target.epoch.isEmpty else {
                let push = plain ?? {
                    // goim's job's envelope of a push to keys: op 9 around one inner packet with seq 0.
                    var inner = ByteBuffer()
                    RawBatch.append(operation: Operation(operation), body: body, to: &inner)
                    return Push(rawBody: inner)
                }()
                plain = push
                for box in loops(holding: info) {
                    written.append(box.eventLoop.submit { box.value.pushToUser(id, operation: operation, push: push) })
                }
                continue
            }
            var packet = ByteBuffer()
            OffsetPackets.append(offset: target.offset, operation: operation, body: body, to: &packet)
            let sequencer = info.sequencer(maxHeld: configuration.history.maxHeld, counters: counters)
            let fill = sequencer.accept(
                epoch: target.epoch, body: packet, packets: [OffsetPackets.Item(offset: target.offset, bytes: packet)]
            ) { run in
                written += enqueue(run, user: id, info: info)
            }
            if fill { scheduleGapFill(.user(target.mid), sequencer) }
        }
        guard let first = written.first else { return }
        try? await EventLoopFuture.andAllComplete(written, on: first.eventLoop).get()
    }

    /// Hands a run of a user's stream to the loops holding its connections, one message at a time (each has its own operation, which each
    /// connection's watch set filters; goim sent each push to keys on its own).
    func enqueue(_ run: OffsetRun, user id: String, info: RoomInfo?) -> [EventLoopFuture<Void>] {
        guard let info else { return [] }
        let targets = loops(holding: info)
        var written: [EventLoopFuture<Void>] = []
        for item in OffsetPackets.split(run.body) ?? [] {
            let operation = item.bytes.getInteger(at: item.bytes.readerIndex + 8, as: Int32.self) ?? 0
            let push = StreamPush(
                userMessage: OffsetRun(epoch: run.epoch, first: item.offset, last: item.offset, body: item.bytes),
                operation: operation)
            for box in targets {
                written.append(box.eventLoop.submit { box.value.pushToUser(id, stream: push) })
            }
        }
        return written
    }

    /// The loops with members of `info` now (a user's connections are usually on one): a member that joins later
    /// joined before its own history read, so it gets what it misses from history (docs/history.md).
    private func loops(holding info: RoomInfo) -> [NIOLoopBoundBox<LoopState>] {
        let mask = info.loops.load(ordering: .acquiring)
        return loops.indices.compactMap { mask & LoopState.bit(forLoop: $0) != 0 ? loops[$0] : nil }
    }

    /// Hands a run to every loop (in the caller's order: each loop's task queue keeps it).
    func enqueue(_ run: OffsetRun, room id: String) -> [EventLoopFuture<Void>] {
        let push = StreamPush(run: run)
        var written: [EventLoopFuture<Void>] = []
        written.reserveCapacity(loops.count)
        for (index, box) in loops.enumerated() {
            let local = index == 0 ? push : push.copy()
            written.append(box.eventLoop.submit { box.value.broadcastRoom(id, stream: local) })
        }
        return written
    }

    /// A stream with history on this comet: a room, or the pushes to one user.
    enum StreamKey: Sendable, CustomStringConvertible {
        case room(String)
        case user(Int64)

        var description: String {
            switch self {
            case .room(let id): "room \(id)"
            case .user(let mid): "user \(mid)"
            }
        }
    }

    /// The stream's history after offset `since` of `epoch`, through logic.
    func history(
        _ key: StreamKey, since: UInt64, epoch: String, limit: Int32
    ) async throws -> Swiftgoim_Logic_HistoryReply {
        switch key {
        case .room(let id): try await logic.roomHistory(room: id, since: since, epoch: epoch, limit: limit)
        case .user(let mid): try await logic.midHistory(mid: mid, since: since, epoch: epoch, limit: limit)
        }
    }

    private func enqueue(_ run: OffsetRun, _ key: StreamKey) -> [EventLoopFuture<Void>] {
        switch key {
        case .room(let id): enqueue(run, room: id)
        case .user(let mid): enqueue(run, user: String(mid), info: users.info(for: String(mid)))
        }
    }

    /// Waits `history.gapWait`, then reads the missing offsets from history through logic and passes on what is in
    /// order (skipping what history no longer has), as long as a gap remains.
    private func scheduleGapFill(_ key: StreamKey, _ sequencer: RoomSequencer) {
        let wait = configuration.history.gapWait
        let limit = configuration.history.maxHeld
        logicCalls.spawn(limited: false) {
            var pause = wait
            while true {
                try? await Task.sleep(for: pause)
                let (epoch, since, before): (String, UInt64, UInt64)
                switch sequencer.gap(after: wait) {
                case .none: return
                case .wait(let remaining):
                    pause = remaining
                    continue
                case .fill(let e, let s, let b): (epoch, since, before) = (e, s, b)
                }
                var found: [OffsetPackets.Item] = []
                do {
                    let missing = Int32(clamping: min(UInt64(limit), before - since - 1))
                    let reply = try await self.history(key, since: since, epoch: epoch, limit: missing)
                    if reply.epoch == epoch { found = Self.items(reply.messages) }
                    self.counters.increment(\.gapFills)
                } catch {
                    self.counters.increment(\.logicErrors)
                    self.logger.warning("cannot read history to fill a gap; skipping it", metadata: [
                        "goim.stream": "\(key)", "goim.since": "\(since)", "error": "\(error)",
                    ])
                }
                var written: [EventLoopFuture<Void>] = []
                let again = sequencer.fill(epoch: epoch, since: since, before: before, found: found) { run in
                    written += self.enqueue(run, key)
                }
                if !again { return }
                pause = wait
            }
        }
    }

    /// History entries as inner packets with their offsets.
    static func items(_ messages: [Swiftgoim_Logic_HistoryEntry]) -> [OffsetPackets.Item] {
        messages.map { message in
            var bytes = ByteBuffer()
            OffsetPackets.append(offset: message.offset, operation: message.op, body: message.body, to: &bytes)
            return OffsetPackets.Item(offset: message.offset, bytes: bytes)
        }
    }

    /// `Broadcast`: every connection watching `operation`. Without a speed it returns once every event loop has
    /// written it. With `speed` > 0 the comet paces itself to about `speed` connections per second (goim slept whole
    /// seconds per bucket) and returns once the pacing is scheduled: a slow broadcast may take minutes, longer than
    /// any caller's deadline.
    func broadcast(operation: Int32, push: Push, speed: Int32) async {
        guard speed > 0 else {
            var written: [EventLoopFuture<Void>] = []
            written.reserveCapacity(loops.count)
            for (index, box) in loops.enumerated() {
                let local = index == 0 ? push : push.copy()
                written.append(box.eventLoop.submit { box.value.broadcast(operation: operation, push: local) })
            }
            try? await EventLoopFuture.andAllComplete(written, on: loops[0].eventLoop).get()
            return
        }
        let perLoop = max(Double(speed) / Double(loops.count), 0.001)
        let intervalSeconds = max(0.1, 1 / perLoop)
        let chunk = max(1, Int((perLoop * intervalSeconds).rounded()))
        let interval = TimeAmount.nanoseconds(Int64(intervalSeconds * 1e9))
        for box in loops {
            box.eventLoop.execute {
                let state = box.value
                let recipients = state.watchers(of: operation)
                state.pacedBroadcast(recipients, from: 0, chunk: chunk, interval: interval, operation: operation, push: push)
            }
        }
    }

    // MARK: Logic calls

    /// Calls Logic `Disconnect` for a session this comet no longer holds.
    func disconnect(mid: Int64, key: String, connection: UInt64) {
        counters.increment(\.disconnects)
        disconnectStarted(key)
        let logic = self.logic
        let server = self.server
        let logger = self.logger
        let counters = self.counters
        logicCalls.spawn(limited: true) {
            do {
                try await logic.disconnect(mid: mid, key: key, server: server)
            } catch {
                counters.increment(\.logicErrors)
                logger.warning(
                    "Logic Disconnect failed; the session expires by its TTL",
                    metadata: ["goim.conn": "\(connection)", "goim.mid": "\(mid)", "goim.key": "\(key)", "error": "\(error)"])
            }
            self.disconnectFinished(key)
        }
    }

    /// Disconnects per key, in flight or finished recently: a new connection with the same key whose Logic
    /// `Connect` overlapped one of them may have had its fresh routing deleted by it (Logic cannot tell the two
    /// sessions apart: goim bug 1).
    private struct KeyDisconnects {
        var inFlight = 0
        var lastFinished = NIODeadline.uptimeNanoseconds(0)
    }

    private struct DisconnectLedger {
        var keys: [String: KeyDisconnects] = [:]
        var pruneAt = 1024
    }

    private let disconnectLedger = Mutex(DisconnectLedger())
    /// Signalled when a Disconnect finishes (a routing repair waits for its key's Disconnects).
    private let disconnectsChanged = AsyncCondition()

    private func disconnectStarted(_ key: String) {
        let window = TimeAmount(configuration.rpcClient.timeout) * 2
        disconnectLedger.withLock { ledger in
            ledger.keys[key, default: KeyDisconnects()].inFlight += 1
            guard ledger.keys.count >= ledger.pruneAt else { return }
            let oldest = NIODeadline.now() - window
            ledger.keys = ledger.keys.filter { $0.value.inFlight > 0 || $0.value.lastFinished >= oldest }
            ledger.pruneAt = max(1024, ledger.keys.count * 2)
        }
    }

    private func disconnectFinished(_ key: String) {
        disconnectLedger.withLock { ledger in
            ledger.keys[key]?.inFlight -= 1
            ledger.keys[key]?.lastFinished = .now()
        }
        disconnectsChanged.signal()
    }

    /// Called when a connection authenticated with `key` after its `Connect` started at `connectStarted`. If a
    /// Disconnect of the same key was in flight meanwhile, Logic may have deleted the routing `Connect` had just
    /// stored; once that Disconnect is done, Logic `Heartbeat` stores it again (it re-creates a missing mapping).
    func repairRoutingIfRaced(mid: Int64, key: String, connectStarted: NIODeadline, connection: UInt64) {
        let raced = disconnectLedger.withLock { ledger -> Bool in
            guard let record = ledger.keys[key] else { return false }
            return record.inFlight > 0 || record.lastFinished >= connectStarted
        }
        guard raced else { return }
        let logic = self.logic
        let server = self.server
        let logger = self.logger
        let counters = self.counters
        let patience = configuration.rpcClient.timeout + .seconds(1)
        logicCalls.spawn(limited: false) {
            _ = await self.disconnectsChanged.wait(
                until: { self.disconnectLedger.withLock { ($0.keys[key]?.inFlight ?? 0) == 0 } },
                deadline: .now + patience)
            do {
                try await logic.heartbeat(mid: mid, key: key, server: server)
                logger.debug(
                    "re-stored routing after a racing Disconnect of the same key",
                    metadata: ["goim.conn": "\(connection)", "goim.key": "\(key)"])
            } catch {
                counters.increment(\.logicErrors)
                logger.warning(
                    "Logic Heartbeat (routing repair) failed",
                    metadata: ["goim.conn": "\(connection)", "goim.key": "\(key)", "error": "\(error)"])
            }
        }
    }

    // MARK: shutdown and statistics

    /// Closes every client connection (each authenticated one is disconnected at Logic) and waits until those
    /// Logic calls are done.
    func closeAll() async {
        await withTaskGroup(of: Void.self) { group in
            for box in loops {
                group.addTask {
                    // Each close completes (and its bookkeeping, which starts the Disconnect, runs) asynchronously:
                    // wait for all of them before waiting for the Logic calls.
                    try? await box.eventLoop.flatSubmit {
                        var closed: [EventLoopFuture<Void>] = []
                        for connection in Array(box.value.connections) {
                            connection.close(reason: "server shutting down", level: .debug)
                            closed.append(connection.channel.closeFuture)
                        }
                        return EventLoopFuture.andAllComplete(closed, on: box.eventLoop)
                    }.get()
                }
            }
        }
        await logicCalls.drained()
    }

    func statistics() async -> CometStatistics {
        let totals = await loopTotals()
        let (open, delivered, dropped) = (totals.open.reduce(0, +), totals.delivered, totals.dropped)
        let c = counters
        return CometStatistics(
            connections: buckets.count, distinctIPs: ips.distinctCount, openConnections: open,
            rooms: rooms.counts().count,
            accepted: c.accepted.load(ordering: .relaxed), refusedPerIPLimit: c.refusedPerIP.load(ordering: .relaxed),
            refusedConnectRate: c.refusedConnectRate.load(ordering: .relaxed), refusedConnectionCap: c.refusedCap.load(ordering: .relaxed),
            authenticated: c.authenticated.load(ordering: .relaxed), authFailures: c.authFailures.load(ordering: .relaxed),
            handshakeTimeouts: c.handshakeTimeouts.load(ordering: .relaxed),
            heartbeatTimeouts: c.heartbeatTimeouts.load(ordering: .relaxed),
            credentialExpiries: c.credentialExpiries.load(ordering: .relaxed),
            credentialRefreshes: c.credentialRefreshes.load(ordering: .relaxed),
            credentialRefreshFailures: c.credentialRefreshFailures.load(ordering: .relaxed),
            protocolErrors: c.protocolErrors.load(ordering: .relaxed),
            watchLimitCloses: c.watchLimitCloses.load(ordering: .relaxed),
            ignoredBeforeAuth: c.ignoredBeforeAuth.load(ordering: .relaxed), replaced: c.replaced.load(ordering: .relaxed),
            slowConsumersClosed: c.slowConsumersClosed.load(ordering: .relaxed),
            slowConsumerEpisodes: c.slowConsumerEpisodes.load(ordering: .relaxed), delivered: delivered, dropped: dropped,
            disconnects: c.disconnects.load(ordering: .relaxed), logicErrors: c.logicErrors.load(ordering: .relaxed),
            connectionObjects: c.liveHandlers.load(ordering: .relaxed),
            offsetDuplicates: c.offsetDuplicates.load(ordering: .relaxed), offsetsHeld: c.offsetsHeld.load(ordering: .relaxed),
            offsetsSkipped: c.offsetsSkipped.load(ordering: .relaxed),
            gapFills: c.gapFills.load(ordering: .relaxed), recoveries: c.recoveries.load(ordering: .relaxed),
            recoveriesIncomplete: c.recoveriesIncomplete.load(ordering: .relaxed),
            recoveryFailures: c.recoveryFailures.load(ordering: .relaxed))
    }

    /// The per-loop counters summed over every event loop (one hop to each).
    func loopTotals() async -> LoopTotals {
        var totals = LoopTotals()
        for box in loops {
            if let loop = try? await box.eventLoop.submit({
                let state = box.value
                return LoopTotals(
                    open: state.open, authenticated: state.authenticated, closed: state.closed, delivered: state.delivered,
                    dropped: state.dropped, directWrites: state.directWrites, bytesWritten: state.bytesWritten)
            }).get() {
                totals.add(loop)
            }
        }
        return totals
    }
}

/// `LoopState`'s counters, of one loop or summed.
struct LoopTotals: Sendable {
    /// By `TransportKind.rawValue`.
    var open = [0, 0]
    var authenticated = [0, 0]
    var closed = 0
    var delivered = 0
    var dropped = 0
    var directWrites = 0
    var bytesWritten = 0

    mutating func add(_ other: LoopTotals) {
        for index in open.indices {
            open[index] += other.open[index]
            authenticated[index] += other.authenticated[index]
        }
        closed += other.closed
        delivered += other.delivered
        dropped += other.dropped
        directWrites += other.directWrites
        bytesWritten += other.bytesWritten
    }
}
