import Logging
import NIOCore
import Synchronization

/// `poolSize` connection slots, made on first use and re-made after a failure. Callers take slots round-robin;
/// a slot whose last connect failed is skipped until its backoff ends, so an outage costs at most one connect
/// attempt per slot per backoff period and commands in between fail at once with the last connect error.
final class ConnectionPool: Sendable {
    private struct Slot {
        enum Phase {
            case idle
            case connecting(EventLoopFuture<RedisConnection>, attempt: Int)
            case connected(RedisConnection)
        }
        var phase = Phase.idle
        var failures = 0
        var retryAt = NIODeadline.uptimeNanoseconds(0)
        var lastError: RedisError?
    }

    private struct State {
        var slots: [Slot]
        var next = 0
        var attempts = 0
        var isShutdown = false
    }

    private enum Choice {
        case use(RedisConnection)
        case wait(EventLoopFuture<RedisConnection>)
        case connect(slot: Int, attempt: Int, promise: EventLoopPromise<RedisConnection>)
        case fail(RedisError)
    }

    static let firstBackoff = TimeAmount.milliseconds(50)
    static let maxBackoff = TimeAmount.seconds(1)

    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>

    init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.state = Mutex(State(slots: Array(repeating: Slot(), count: max(1, configuration.poolSize))))
    }

    /// A live connection, connecting a slot first if needed.
    func connection() async throws -> RedisConnection {
        switch choose() {
        case .use(let connection):
            return connection
        case .wait(let future):
            return try await future.get()
        case .fail(let error):
            throw error
        case .connect(let slot, let attempt, let promise):
            do {
                let connection = try await RedisConnection.connect(
                    configuration, on: promise.futureResult.eventLoop, logger: logger)
                try connected(slot: slot, attempt: attempt, connection)
                promise.succeed(connection)
                return connection
            } catch {
                let error = error as? RedisError
                    ?? .connectionFailed(host: configuration.host, port: configuration.port, underlying: error)
                failed(slot: slot, attempt: attempt, error)
                promise.fail(error)
                throw error
            }
        }
    }

    /// Closes every connection and refuses later use. Returns when the connections are closed.
    func shutdown() -> [EventLoopFuture<Void>] {
        let phases = state.withLock { state -> [Slot.Phase] in
            state.isShutdown = true
            defer { for index in state.slots.indices { state.slots[index].phase = .idle } }
            return state.slots.map(\.phase)
        }
        // Connects in progress close themselves in `connected(slot:attempt:_:)` when they see `isShutdown`.
        return phases.compactMap { phase in
            guard case .connected(let connection) = phase else { return nil }
            return connection.close()
        }
    }

    private func choose() -> Choice {
        let now = NIODeadline.now()
        return state.withLock { state -> Choice in
            if state.isShutdown { return .fail(.shutdown) }
            let count = state.slots.count
            let start = state.next
            state.next = (start + 1) % count
            var lastError: RedisError?
            for offset in 0..<count {
                let index = (start + offset) % count
                switch state.slots[index].phase {
                case .connected(let connection) where connection.isActive:
                    return .use(connection)
                case .connecting(let future, _):
                    return .wait(future)
                case .connected, .idle:
                    let slot = state.slots[index]
                    if slot.failures > 0 && now < slot.retryAt {
                        lastError = slot.lastError
                        continue
                    }
                    state.attempts += 1
                    let promise = eventLoopGroup.next().makePromise(of: RedisConnection.self)
                    state.slots[index].phase = .connecting(promise.futureResult, attempt: state.attempts)
                    return .connect(slot: index, attempt: state.attempts, promise: promise)
                }
            }
            return .fail(lastError ?? .connectionClosed)
        }
    }

    private func connected(slot: Int, attempt: Int, _ connection: RedisConnection) throws(RedisError) {
        let accepted = state.withLock { state -> Bool in
            guard !state.isShutdown else { return false }
            guard case .connecting(_, attempt) = state.slots[slot].phase else { return false }
            state.slots[slot] = Slot(phase: .connected(connection))
            return true
        }
        guard accepted else {
            connection.channel.close(promise: nil)
            throw .shutdown
        }
        logger.debug("Redis connection up", metadata: ["goim.redis.slot": "\(slot)"])
        // Free the slot when the connection dies, so the next caller connects again.
        connection.channel.closeFuture.whenComplete { [weak self] _ in
            self?.state.withLock { state in
                if case .connected(let current) = state.slots[slot].phase, current === connection {
                    state.slots[slot].phase = .idle
                }
            }
        }
    }

    private func failed(slot: Int, attempt: Int, _ error: RedisError) {
        let backoff = state.withLock { state -> TimeAmount? in
            guard case .connecting(_, attempt) = state.slots[slot].phase else { return nil }
            let failures = state.slots[slot].failures + 1
            let backoff = min(Self.firstBackoff * (1 << min(failures - 1, 20)), Self.maxBackoff)
            state.slots[slot] = Slot(phase: .idle, failures: failures, retryAt: .now() + backoff, lastError: error)
            return backoff
        }
        if let backoff {
            logger.debug(
                "Redis connect failed",
                metadata: [
                    "goim.redis.slot": "\(slot)", "goim.redis.error": "\(error)", "goim.redis.backoff": "\(backoff)",
                ])
        }
    }
}
