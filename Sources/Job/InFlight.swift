import Logging
import NATS
import Primitives
import Synchronization

/// The messages this job has fetched and not yet settled with JetStream, and the settling itself.
///
/// Holds one `permits` slot per message from fetch until its ack (or term/nak) has been sent, which
/// bounds the messages in flight (`consumer.maxInFlight`). While a message waits for its comets
/// (retries while a comet is down), `keepAlive` tells JetStream it is still being worked on, so the
/// server does not hand it to another job (`consumer.ackWait`).
final class InFlight: TicketSink {
    enum Disposition: Sendable {
        case ack
        case term
        case nak
    }

    struct Settlement: Sendable {
        var id: UInt64
        var message: JetStreamMessage
        var disposition: Disposition
    }

    struct Item {
        var message: JetStreamMessage
        var since: ContinuousClock.Instant
        var lastTouched: ContinuousClock.Instant
        var settled = false
    }

    struct State {
        var items: [UInt64: Item] = [:]
        var nextID: UInt64 = 0
        var unsettled = 0
        /// Stream sequences of the messages this job settled with an ack most recently (`recent` in a ring, oldest
        /// overwritten first). A message can come back after its ack: the ack failed (NATS away), or nats-server was
        /// killed before it stored the consumer's ack floor. Such a redelivery is acknowledged without sending it
        /// to the comets again.
        var settled: Set<UInt64> = []
        var recent = [UInt64](repeating: 0, count: InFlight.remembered)
        var recentNext = 0
    }

    /// How many settled messages are remembered (a few seconds of traffic at high rates; 1 MiB or so).
    static let remembered = 65_536

    let permits: AsyncSemaphore
    let statistics: JobStatistics
    let logger: Logger
    private let state = Mutex(State())
    /// Signalled when a message is settled or removed (shutdown waits on it).
    private let changed = AsyncCondition()
    private let closed = Atomic<Bool>(false)
    private let settlements: AsyncStream<Settlement>
    private let settlementsContinuation: AsyncStream<Settlement>.Continuation

    init(maxInFlight: Int, statistics: JobStatistics, logger: Logger) {
        permits = AsyncSemaphore(permits: maxInFlight)
        self.statistics = statistics
        self.logger = logger
        (settlements, settlementsContinuation) = AsyncStream.makeStream(of: Settlement.self)
    }

    /// Registers a fetched message (its permit is already held) and returns its ticket.
    func admit(_ message: JetStreamMessage) -> Ticket {
        let id = state.withLock { state -> UInt64 in
            let id = state.nextID
            state.nextID += 1
            let now = ContinuousClock.now
            state.items[id] = Item(message: message, since: now, lastTouched: now)
            state.unsettled += 1
            return id
        }
        return Ticket(id: id, sink: self)
    }

    func finish(_ id: UInt64, _ outcome: DeliveryOutcome) {
        let message = state.withLock { state -> JetStreamMessage? in
            guard var item = state.items[id], !item.settled else { return nil }
            item.settled = true
            state.items[id] = item
            state.unsettled -= 1
            return item.message
        }
        guard let message else { return }
        changed.signal()
        let metadata: Logger.Metadata = [
            "goim.subject": "\(message.subject)", "goim.seq": "\(message.streamSequence)",
            "goim.deliveries": "\(message.deliveryCount)",
        ]
        let disposition: Disposition
        switch outcome {
        case .delivered:
            statistics.delivered.increment()
            disposition = .ack
        case .partiallyDelivered(let reason):
            statistics.partiallyDelivered.increment()
            logger.warning("push delivered to some comets only", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
            disposition = .ack
        case .undeliverable(let reason):
            statistics.undeliverable.increment()
            logger.error("push undeliverable; acknowledged", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
            disposition = .ack
        case .rejected(let reason):
            statistics.rejected.increment()
            logger.error("push refused by comet; acknowledged", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
            disposition = .ack
        case .malformed(let reason):
            statistics.malformed.increment()
            logger.error("malformed queue message; terminated", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
            disposition = .term
        case .abandoned:
            statistics.abandoned.increment()
            disposition = .nak
        case .alreadyDelivered:
            statistics.redeliveriesSkipped.increment()
            logger.info("push came back after it was delivered (its ack was lost); acknowledged, not sent again", metadata: metadata)
            disposition = .ack
        }
        settlementsContinuation.yield(Settlement(id: id, message: message, disposition: disposition))
    }

    /// Sends acks/terms/naks until `close()`. Several run at once (each ack waits for the server).
    func runSettler() async {
        for await settlement in settlements {
            await settle(settlement)
        }
    }

    private func settle(_ settlement: Settlement) async {
        var attempt = 0
        while true {
            do {
                switch settlement.disposition {
                case .ack:
                    try await settlement.message.ack()
                    statistics.acked.add(1, ordering: .relaxed)
                case .term:
                    try await settlement.message.term()
                    statistics.terminated.add(1, ordering: .relaxed)
                case .nak:
                    try await settlement.message.nak()
                    statistics.nakked.add(1, ordering: .relaxed)
                }
                break
            } catch {
                attempt += 1
                if attempt < 3 {
                    try? await Task.sleep(for: .milliseconds(50 * attempt))
                    continue
                }
                statistics.ackFailures.increment()
                logger.warning("cannot settle a message with JetStream; it will be redelivered", metadata: [
                    "goim.seq": "\(settlement.message.streamSequence)", "error": "\(error)",
                ])
                break
            }
        }
        state.withLock { state in
            _ = state.items.removeValue(forKey: settlement.id)
            if case .ack = settlement.disposition { Self.remember(settlement.message.streamSequence, in: &state) }
        }
        changed.signal()
        permits.release()
    }

    private static func remember(_ sequence: UInt64, in state: inout State) {
        guard sequence > 0, state.settled.insert(sequence).inserted else { return }
        let evicted = state.recent[state.recentNext]
        if evicted > 0 { state.settled.remove(evicted) }
        state.recent[state.recentNext] = sequence
        state.recentNext = (state.recentNext + 1) % state.recent.count
    }

    /// Whether `message` is one this job already delivered and acknowledged (or tried to): it came back because the
    /// ack was lost.
    func wasDelivered(_ message: JetStreamMessage) -> Bool {
        state.withLock { $0.settled.contains(message.streamSequence) }
    }

    /// Every `interval`, tells JetStream that messages held longer than `interval` are still being
    /// worked on (restarting their ack wait), until `close()` or cancellation.
    func keepAlive(interval: Duration) async {
        var next = ContinuousClock.now + interval
        while !Task.isCancelled && !closed.load(ordering: .relaxed) {
            do { try await Task.sleep(for: min(interval, .milliseconds(100))) } catch { return }
            let now = ContinuousClock.now
            guard now >= next else { continue }
            next = now + interval
            let due = state.withLock { state -> [JetStreamMessage] in
                var due: [JetStreamMessage] = []
                for (id, item) in state.items where !item.settled && now - item.lastTouched >= interval {
                    due.append(item.message)
                    state.items[id]?.lastTouched = now
                }
                return due
            }
            for message in due { try? await message.inProgress() }
        }
    }

    /// Waits until every admitted message has an outcome, or `deadline`; true when all have.
    func waitUntilSettled(deadline: ContinuousClock.Instant) async -> Bool {
        await waitUntil(deadline: deadline) { $0.unsettled == 0 }
    }

    /// Waits until every admitted message was acked/termed/nak'ed, or `deadline`.
    func waitUntilEmpty(deadline: ContinuousClock.Instant) async -> Bool {
        await waitUntil(deadline: deadline) { $0.items.isEmpty }
    }

    private func waitUntil(deadline: ContinuousClock.Instant, _ check: (State) -> Bool) async -> Bool {
        await changed.wait(until: { state.withLock { check($0) } }, deadline: deadline)
    }

    var count: Int { state.withLock { $0.items.count } }

    /// Ends the settlers once they have sent what is queued, and the keep-alive loop.
    func close() {
        closed.store(true, ordering: .relaxed)
        settlementsContinuation.finish()
    }
}
