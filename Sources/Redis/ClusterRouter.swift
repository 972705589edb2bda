import Logging
import NIOCore
import Synchronization

/// The cluster mode of `RedisClient`: one `ConnectionPool` per node, a slot table read with CLUSTER SLOTS, and
/// pipelines split per node (sent concurrently) whose replies are put back in the caller's order.
///
/// Redirections: `-MOVED slot host:port` updates that slot at once, starts a topology refresh and resends the
/// command to the named node; `-ASK` resends it once to the named node preceded by ASKING. A connect failure,
/// `-TRYAGAIN` or `-CLUSTERDOWN` refreshes the topology and resends after a short pause, until the command
/// timeout has passed (this is what rides over a failover: the slots move to the promoted replica). A command that
/// may have reached a node (timeout, connection closed) is not resent: the error is thrown, as in single mode.
final class ClusterRouter: Sendable {
    private struct State {
        var owners: [RedisNodeAddress?] = Array(repeating: nil, count: RedisSlot.count)
        var pools: [RedisNodeAddress: ConnectionPool] = [:]
        var refreshing: Task<Void, any Error>?
        var isShutdown = false
    }

    /// One unit of routing: a command, or a whole MULTI…EXEC block (which must reach one node in one piece).
    private struct Unit {
        var commands: [RedisCommand]
        var slot: Int?
        /// Set after `-ASK`: the next attempt goes to this node, preceded by ASKING.
        var asking: RedisNodeAddress?
        var replies: [RESPValue]?
    }

    /// How the caller's replies are rebuilt from the units' replies.
    private enum Assembly {
        /// The units' replies as they are, in order.
        case units(Range<Int>)
        /// A multi-key command split into one command per key: MGET's values are joined, DEL/EXISTS/… counts added.
        case merged(name: String, Range<Int>)
    }

    static let splittable: Set<String> = ["MGET", "DEL", "EXISTS", "UNLINK", "TOUCH"]

    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// Closes every node's connections.
    func shutdown() -> [EventLoopFuture<Void>] {
        let pools = state.withLock { state -> [ConnectionPool] in
            state.isShutdown = true
            state.refreshing?.cancel()
            return Array(state.pools.values)
        }
        return pools.flatMap { $0.shutdown() }
    }

    /// Re-reads the topology every `interval` until cancelled.
    func refreshPeriodically(every interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if Task.isCancelled { return }
            do {
                try await refresh()
            } catch {
                logger.warning("Redis Cluster topology refresh failed", metadata: ["goim.redis.error": "\(error)"])
            }
        }
    }

    /// Reads CLUSTER SLOTS from a reachable node (known masters first, then the seeds) and replaces the slot table.
    /// Concurrent callers share one refresh.
    func refresh() async throws {
        let task = try state.withLock { state throws(RedisError) -> Task<Void, any Error> in
            if state.isShutdown { throw .shutdown }
            if let running = state.refreshing { return running }
            let task = Task {
                defer { self.state.withLock { $0.refreshing = nil } }
                try await self.readTopology()
            }
            state.refreshing = task
            return task
        }
        try await task.value
    }

    /// A refresh in the background (after MOVED); its failure is only logged.
    private func refreshSoon() {
        Task {
            do { try await refresh() } catch {
                logger.debug("Redis Cluster topology refresh failed", metadata: ["goim.redis.error": "\(error)"])
            }
        }
    }

    private func readTopology() async throws {
        let candidates = state.withLock { state -> [RedisNodeAddress] in
            var seen: Set<RedisNodeAddress> = []
            return (state.owners.compactMap { $0 } + configuration.clusterNodes).filter { seen.insert($0).inserted }
        }
        var lastError: any Error = RedisError.connectionClosed
        for node in candidates {
            do {
                let reply = try await pool(node).connection().send([RedisCommand("CLUSTER", ["SLOTS"])])[0]
                if case .error(let message) = reply { throw RedisError.server(message: message) }
                let owners = try Self.parseSlots(reply, askedNode: node)
                let changed = state.withLock { state -> Bool in
                    defer { state.owners = owners }
                    return state.owners != owners
                }
                if changed {
                    logger.info("Redis Cluster topology read", metadata: [
                        "goim.redis.node": "\(node)", "goim.redis.masters": "\(Set(owners.compactMap { $0 }).count)",
                    ])
                }
                return
            } catch {
                logger.debug("Redis Cluster topology not read", metadata: [
                    "goim.redis.node": "\(node)", "goim.redis.error": "\(error)",
                ])
                lastError = error
            }
        }
        throw lastError
    }

    /// CLUSTER SLOTS: `[[start, end, [host, port, id, …], replicas…], …]`; the first node of each range is its master.
    static func parseSlots(_ reply: RESPValue, askedNode: RedisNodeAddress) throws(RedisError) -> [RedisNodeAddress?] {
        guard let ranges = reply.array else { throw .protocolError("unexpected reply to CLUSTER SLOTS: \(reply)") }
        var owners = [RedisNodeAddress?](repeating: nil, count: RedisSlot.count)
        for range in ranges {
            guard let items = range.array, items.count >= 3, let start = items[0].int, let end = items[1].int,
                let master = items[2].array, master.count >= 2, let host = master[0].string, let port = master[1].int,
                start >= 0, end < RedisSlot.count, start <= end
            else { throw .protocolError("unexpected entry in CLUSTER SLOTS: \(range)") }
            // An empty or unknown host means "the address you reached me at".
            let node = RedisNodeAddress(host: host.isEmpty || host == "?" ? askedNode.host : host, port: Int(port))
            for slot in Int(start)...Int(end) { owners[slot] = node }
        }
        return owners
    }

    private func pool(_ node: RedisNodeAddress) throws(RedisError) -> ConnectionPool {
        try state.withLock { state throws(RedisError) -> ConnectionPool in
            if state.isShutdown { throw .shutdown }
            if let pool = state.pools[node] { return pool }
            var configuration = self.configuration
            configuration.host = node.host
            configuration.port = node.port
            configuration.database = 0  // SELECT is refused in cluster mode
            let pool = ConnectionPool(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
            state.pools[node] = pool
            return pool
        }
    }

    /// The node serving `slot` (any known node for a keyless command); nil before the topology is known.
    private func owner(_ slot: Int?) -> RedisNodeAddress? {
        state.withLock { state in
            if let slot { return state.owners[slot] }
            return state.owners.first { $0 != nil } ?? configuration.clusterNodes.first
        }
    }

    func pipeline(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        let (planned, assembly) = Self.plan(commands)
        var units = planned
        let deadline = ContinuousClock.now + configuration.commandTimeout
        var pending = Array(units.indices)
        var round = 0
        while !pending.isEmpty {
            round += 1
            if pending.contains(where: { units[$0].asking == nil && owner(units[$0].slot) == nil }) {
                try await refresh()
            }
            var byNode: [RedisNodeAddress: [Int]] = [:]
            for index in pending {
                guard let node = units[index].asking ?? owner(units[index].slot) else {
                    throw RedisError.server(message: "CLUSTERDOWN no node serves slot \(units[index].slot ?? -1)")
                }
                byNode[node, default: []].append(index)
            }
            let snapshot = units
            let results = await withTaskGroup(of: (RedisNodeAddress, Result<[RESPValue], any Error>).self) { group in
                for (node, indices) in byNode {
                    group.addTask {
                        var batch: [RedisCommand] = []
                        for index in indices {
                            if snapshot[index].asking != nil { batch.append(RedisCommand("ASKING")) }
                            batch += snapshot[index].commands
                        }
                        do {
                            return (node, .success(try await self.pool(node).connection().send(batch)))
                        } catch {
                            return (node, .failure(error))
                        }
                    }
                }
                var results: [RedisNodeAddress: Result<[RESPValue], any Error>] = [:]
                for await (node, result) in group { results[node] = result }
                return results
            }

            var next: [Int] = []
            var pause = false
            for (node, indices) in byNode {
                switch results[node]! {
                case .failure(let error):
                    // Only a failed connect is sure not to have reached Redis: resend that, throw the rest.
                    guard case RedisError.connectionFailed = error, ContinuousClock.now < deadline else {
                        refreshSoon()  // the node may be gone: the next caller should find its successor sooner
                        throw error
                    }
                    logger.debug("Redis Cluster node unreachable", metadata: ["goim.redis.node": "\(node)"])
                    next += indices
                    pause = true
                case .success(let replies):
                    var position = 0
                    for index in indices {
                        if units[index].asking != nil { position += 1 }  // ASKING's +OK
                        units[index].asking = nil
                        let count = units[index].commands.count
                        let own = Array(replies[position..<(position + count)])
                        position += count
                        switch Self.redirection(own) {
                        case .none:
                            units[index].replies = own
                        case .moved(let slot, let target) where ContinuousClock.now < deadline && round < 16:
                            state.withLock { $0.owners[slot] = target }
                            refreshSoon()
                            next.append(index)
                        case .ask(let target) where ContinuousClock.now < deadline && round < 16:
                            // ASKING covers only the next command, so a MULTI block is not sent with it: it is
                            // resent as it is (and gets ASK again) until the migration ends or the deadline passes.
                            units[index].asking = units[index].commands.count == 1 ? target : nil
                            next.append(index)
                        case .retry where ContinuousClock.now < deadline:
                            next.append(index)
                            pause = true
                        default:
                            units[index].replies = own
                        }
                    }
                }
            }
            pending = next
            if pause && !pending.isEmpty {
                try? await refresh()
                try await Task.sleep(for: .milliseconds(min(50 * round, 250)))
            }
        }
        return Self.assemble(units.map { $0.replies! }, assembly)
    }

    private enum Redirection {
        case none
        case moved(slot: Int, RedisNodeAddress)
        case ask(RedisNodeAddress)
        /// TRYAGAIN (multi-key command during a migration), CLUSTERDOWN (failover in progress).
        case retry
    }

    private static func redirection(_ replies: [RESPValue]) -> Redirection {
        for reply in replies {
            guard case .error(let message) = reply else { continue }
            let parts = message.split(separator: " ")
            switch parts.first {
            case "MOVED" where parts.count == 3:
                if let slot = Int(parts[1]), let node = RedisNodeAddress(parts[2]) { return .moved(slot: slot, node) }
            case "ASK" where parts.count == 3:
                if let node = RedisNodeAddress(parts[2]) { return .ask(node) }
            case "TRYAGAIN", "CLUSTERDOWN":
                return .retry
            default:
                break
            }
        }
        return .none
    }

    /// Cuts `commands` into units: MULTI…EXEC blocks stay whole (routed by their first key), multi-key commands whose
    /// keys span several slots become one command per key.
    private static func plan(_ commands: [RedisCommand]) -> ([Unit], [Assembly]) {
        var units: [Unit] = []
        var assembly: [Assembly] = []
        var index = 0
        while index < commands.count {
            let command = commands[index]
            let name = command.name.uppercased()
            if name == "MULTI", let end = commands[index...].firstIndex(where: { $0.name.uppercased() == "EXEC" }) {
                let block = Array(commands[index...end])
                units.append(Unit(commands: block, slot: block.lazy.compactMap(\.slot).first))
                assembly.append(.units((units.count - 1)..<units.count))
                index = end + 1
                continue
            }
            if command.slot == nil, command.keys.count > 1, splittable.contains(name) {
                let start = units.count
                for key in command.keys {
                    units.append(Unit(commands: [RedisCommand(command.name, [key])], slot: RedisSlot.slot(key)))
                }
                assembly.append(.merged(name: name, start..<units.count))
            } else {
                units.append(Unit(commands: [command], slot: command.slot))
                assembly.append(.units((units.count - 1)..<units.count))
            }
            index += 1
        }
        return (units, assembly)
    }

    private static func assemble(_ replies: [[RESPValue]], _ assembly: [Assembly]) -> [RESPValue] {
        var result: [RESPValue] = []
        for part in assembly {
            switch part {
            case .units(let range):
                for index in range { result += replies[index] }
            case .merged(let name, let range):
                let parts = range.map { replies[$0][0] }
                if let error = parts.first(where: { if case .error = $0 { return true } else { return false } }) {
                    result.append(error)
                } else if name == "MGET" {
                    result.append(.array(parts.flatMap { $0.array ?? [.null] }))
                } else {
                    result.append(.integer(parts.reduce(0) { $0 + ($1.int ?? 0) }))
                }
            }
        }
        return result
    }
}
