import Foundation
import GoIMConfig
import GoIMRPC
import History
import Logging
import NATS
import ServiceLifecycle
import SwiftProtobuf
import Synchronization

/// Consumes `PushMsg`s from the push stream with a durable pull consumer shared by every job
/// process, and delivers them to the comets.
///
/// A message is acknowledged only once its comets accepted it (or it can never be delivered: see
/// `DeliveryOutcome`); malformed messages are terminated. Messages are dispatched in stream order,
/// so a room's messages keep their order (within this job). At most `maxInFlight` messages are held
/// unacknowledged; a full room queue stops the dispatch loop until it drains (back-pressure).
///
/// Graceful shutdown stops fetching, lets messages in flight finish and be acknowledged (for at
/// most `drainTimeout`), hands back the rest with a nak, then returns.
public final class JobConsumer: Service, Sendable {
    public struct Settings: Sendable {
        public var stream: String = "GOIM_PUSH"
        public var durable: String = "goim-job"
        /// Subjects consumed, e.g. `goim.push.>`.
        public var filterSubject: String? = "goim.push.>"
        public var batch: Int = 256
        public var maxInFlight: Int = 4096
        public var ackWait: Duration = .seconds(30)
        /// How long one pull waits for messages when the stream is idle (see docs/job.md).
        public var fetchWait: Duration = .milliseconds(10)
        public var drainTimeout: Duration = .seconds(10)
        public var roomBatch: Int = 20
        public var roomQueueSize: Int = 1024
        public var roomIdle: Duration = .seconds(900)
        public var backoff: Duration = .milliseconds(100)
        public var maxBackoff: Duration = .seconds(3)
        /// A call to a comet is retried for at most this long.
        public var deliveryDeadline: Duration = .seconds(10)
        /// Concurrent acknowledgements (each waits for the server's confirmation).
        public var settlers: Int = 16

        public init() {}
    }

    let settings: Settings
    let nats: NATSClient
    let pool: CometPool
    public let statistics: JobStatistics
    let logger: Logger
    /// Created when the consumer cannot bind because the stream does not exist yet (logic normally
    /// creates it); an existing stream is left as it is.
    let streamConfiguration: StreamConfiguration?
    /// Gives messages of rooms and users with history their offsets (nil: nothing keeps history).
    let history: HistoryWriter?
    private let stopping = Atomic<Bool>(false)
    /// What the consumer works with once bound (nil before and after): for `/metrics` and `/ready`.
    private let live = Mutex<(jetStream: JetStream, inFlight: InFlight)?>(nil)

    public init(
        settings: Settings, nats: NATSClient, pool: CometPool, statistics: JobStatistics, logger: Logger,
        streamConfiguration: StreamConfiguration? = nil, history: (policy: HistorySection, store: HistoryStore)? = nil
    ) {
        self.settings = settings
        self.history = history.flatMap {
            $0.policy.rooms.isEmpty && $0.policy.mids == nil
                ? nil : HistoryWriter(policy: $0.policy, store: $0.store, statistics: statistics, logger: logger)
        }
        self.streamConfiguration = streamConfiguration
        self.nats = nats
        self.pool = pool
        self.statistics = statistics
        self.logger = logger
    }

    public func run() async throws {
        // NATS may come up after the job: wait for it (or for shutdown).
        guard let connection = try? await cancelWhenGracefulShutdown({ try await self.nats.connection() }) else { return }
        let jetStream = try connection.jetStream()
        guard let consumer = await bind(jetStream) else { return }
        logger.info("consuming pushes", metadata: [
            "goim.stream": "\(settings.stream)", "goim.durable": "\(settings.durable)",
        ])
        let inFlight = InFlight(maxInFlight: settings.maxInFlight, statistics: statistics, logger: logger)
        live.withLock { $0 = (jetStream, inFlight) }
        defer { live.withLock { $0 = nil } }
        let delivery = Delivery(
            pool: pool, statistics: statistics, backoff: settings.backoff, maxBackoff: settings.maxBackoff,
            health: pool.health, deliveryDeadline: settings.deliveryDeadline, logger: logger)
        await withDiscardingTaskGroup { settlers in
            for _ in 0..<max(1, settings.settlers) {
                settlers.addTask { await inFlight.runSettler() }
            }
            settlers.addTask { await inFlight.keepAlive(interval: max(.milliseconds(100), self.settings.ackWait / 3)) }

            let doorbell = Doorbell()
            await withDiscardingTaskGroup { deliveries in
                await withGracefulShutdownHandler {
                    await withDiscardingTaskGroup { bell in
                        bell.addTask {
                            do {
                                try await doorbell.listen(connection, subject: self.settings.filterSubject ?? ">")
                            } catch {
                                self.logger.warning("cannot subscribe to the push subjects; polling instead", metadata: [
                                    "error": "\(error)"
                                ])
                            }
                        }
                        await fetchLoop(
                            consumer, inFlight: inFlight, delivery: delivery, doorbell: doorbell, deliveries: &deliveries)
                        bell.cancelAll()
                    }
                } onGracefulShutdown: {
                    self.stopping.store(true, ordering: .relaxed)
                    inFlight.permits.release()  // wakes a fetch loop waiting for a permit
                    doorbell.ring()  // or for a publish
                }
                let deadline = ContinuousClock.now + settings.drainTimeout
                if await !inFlight.waitUntilSettled(deadline: deadline) {
                    logger.warning("shutdown: handing messages still in flight back to the queue", metadata: [
                        "goim.inflight": "\(inFlight.count)"
                    ])
                    deliveries.cancelAll()
                }
            }
            _ = await inFlight.waitUntilEmpty(deadline: .now + .seconds(5))
            inFlight.close()
        }
        await consumer.close()
        logger.info("stopped consuming", metadata: ["goim.stats": "\(statistics.snapshot)"])
    }

    /// Creates (or updates) the durable consumer and binds to it, retrying until it works or
    /// shutdown begins.
    private func bind(_ jetStream: JetStream) async -> PullConsumer? {
        var delay = settings.backoff
        var createdStream = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                return try await jetStream.pullConsumer(
                    stream: settings.stream, durable: settings.durable, filterSubject: settings.filterSubject,
                    ackWait: settings.ackWait, maxAckPending: max(1024, settings.maxInFlight * 4), maxDeliver: -1)
            } catch {
                if let streamConfiguration, !createdStream {
                    createdStream = true
                    do {
                        try await jetStream.createOrUpdateStream(streamConfiguration)
                        logger.info("created the push stream", metadata: ["goim.stream": "\(streamConfiguration.name)"])
                        continue
                    } catch {
                        logger.warning("cannot create the push stream", metadata: ["error": "\(error)"])
                    }
                }
                logger.warning("cannot bind the JetStream consumer; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, settings.maxBackoff)
            }
        }
        return nil
    }

    /// Messages fetched and not settled yet (0 when not consuming).
    public var inFlightCount: Int { live.withLock { $0?.inFlight.count } ?? 0 }

    /// True once bound to the durable consumer, until shutdown.
    public var isConsuming: Bool { live.withLock { $0 != nil } }

    /// The durable consumer's backlog from JetStream; nil when not consuming or the server did not answer.
    public func backlog() async -> ConsumerInfo? {
        guard let jetStream = live.withLock({ $0?.jetStream }) else { return nil }
        return try? await jetStream.consumerInfo(stream: settings.stream, durable: settings.durable)
    }

    private var isStopping: Bool { stopping.load(ordering: .relaxed) || Task.isCancelled }

    /// When the stream is quiet, the consumer waits for a publish (the doorbell) and pulls at least this often
    /// anyway, for redelivered messages (which ring no bell).
    static let idlePoll: Duration = .seconds(1)
    /// After a publish rang the doorbell, pulling goes on this long even while pulls come back empty: the
    /// stream may store the message a little after the bell rang (or another job may have taken it).
    static let ringWindow: Duration = .milliseconds(200)

    private func fetchLoop(
        _ consumer: PullConsumer, inFlight: InFlight, delivery: Delivery, doorbell: Doorbell,
        deliveries: inout DiscardingTaskGroup
    ) async {
        var rooms = RoomTable(
            batchLimit: settings.roomBatch, queueSize: settings.roomQueueSize, idle: settings.roomIdle, health: delivery.health)
        var failures = 0
        // Pull while messages come (and for `ringWindow` after a publish); once quiet, wait for the doorbell.
        var pullUntil = ContinuousClock.now + Self.ringWindow
        while !isStopping {
            if ContinuousClock.now >= pullUntil {
                let rang = await doorbell.wait(timeout: Self.idlePoll)
                // A ring opens a window of pulls; the safety poll (no ring) pulls once.
                pullUntil = ContinuousClock.now + (rang ? Self.ringWindow : .zero)
                rooms.sweepIfDue()
                if isStopping { break }
            }
            doorbell.reset()
            do {
                try await inFlight.permits.acquire()
            } catch {
                break
            }
            if isStopping {
                inFlight.permits.release()
                break
            }
            let held = 1 + inFlight.permits.tryAcquire(upTo: settings.batch - 1)
            let messages: [JetStreamMessage]
            do {
                messages = try await consumer.fetch(max: held, timeout: settings.fetchWait)
                failures = 0
            } catch {
                inFlight.permits.release(held)
                if isStopping { break }
                failures += 1
                if failures == 1 || failures.isMultiple(of: 50) {
                    logger.warning("fetch from JetStream failed; retrying", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: min(settings.backoff * failures, settings.maxBackoff))
                continue
            }
            inFlight.permits.release(held - messages.count)
            if !messages.isEmpty {
                pullUntil = max(pullUntil, .now + settings.fetchWait * 2)
                logger.trace("fetched", metadata: ["goim.count": "\(messages.count)", "goim.inflight": "\(inFlight.count)"])
            }
            var admitted: [(message: JetStreamMessage, ticket: Ticket, push: Goim_Logic_PushMsg)] = []
            admitted.reserveCapacity(messages.count)
            for message in messages {
                statistics.received.increment()
                if message.deliveryCount > 1 { statistics.redelivered.add(1, ordering: .relaxed) }
                let ticket = inFlight.admit(message)
                if inFlight.wasDelivered(message) {
                    ticket.finish(.alreadyDelivered)
                    continue
                }
                do {
                    admitted.append((message, ticket, try Goim_Logic_PushMsg(serializedBytes: message.payload)))
                } catch {
                    ticket.finish(.malformed("not a goim.logic.PushMsg: \(error)"))
                }
            }
            // Rooms and users with history: every message gets its offsets before any of them goes out (one pipeline).
            let stamps = await history?.stamp(admitted.map { ($0.message, $0.push) })
            for (index, item) in admitted.enumerated() {
                await dispatch(
                    item.push, ticket: item.ticket, stamps: stamps?[index] ?? HistoryWriter.Stamps(), delivery: delivery,
                    rooms: &rooms, deliveries: &deliveries)
            }
            rooms.sweepIfDue()
        }
    }

    private func dispatch(
        _ push: Goim_Logic_PushMsg, ticket: Ticket, stamps: HistoryWriter.Stamps, delivery: Delivery,
        rooms: inout RoomTable, deliveries: inout DiscardingTaskGroup
    ) async {
        let stamp = stamps.room
        switch push.type {
        case .push where !push.mids.isEmpty:
            deliveries.addTask { ticket.finish(await delivery.pushUsers(push, stamps: stamps.users)) }
        case .push:
            guard !push.server.isEmpty, !push.keys.isEmpty else {
                ticket.finish(.malformed("PUSH without server or keys"))
                return
            }
            deliveries.addTask { ticket.finish(await delivery.push(push)) }
        case .broadcast:
            deliveries.addTask { ticket.finish(await delivery.broadcast(push)) }
        case .room:
            guard !push.room.isEmpty else {
                ticket.finish(.malformed("ROOM without room"))
                return
            }
            await dispatchRoom(push, ticket: ticket, stamp: stamp, delivery: delivery, rooms: &rooms, deliveries: &deliveries)
        case .UNRECOGNIZED(let type):
            ticket.finish(.malformed("unknown PushMsg type \(type)"))
        }
    }

    private func dispatchRoom(
        _ push: Goim_Logic_PushMsg, ticket: Ticket, stamp: HistoryStamp?, delivery: Delivery, rooms: inout RoomTable,
        deliveries: inout DiscardingTaskGroup
    ) async {
        guard let targets = await pool.roomTargets(push.room) else {
            ticket.finish(.undeliverable("no comet is registered"))
            return
        }
        guard !targets.isEmpty else {
            ticket.finish(.delivered)  // rooms filtering: no comet has a member of this room
            return
        }
        // A room with history: the inner packet's seq is the message's offset (0 otherwise, as goim).
        let packet = PushEncoding.innerPacket(
            operation: push.operation, body: push.msg, sequence: stamp.map { Int32(clamping: $0.offset) } ?? 0)
        let hostnames = targets.map(\.hostname)
        while true {
            let aggregator = rooms.aggregator(for: push.room)
            do {
                try await aggregator.reserve()
            } catch {
                ticket.finish(.abandoned)
                return
            }
            switch aggregator.append(packet: packet, epoch: stamp?.epoch ?? "", ticket: ticket, targets: hostnames) {
            case .retired:
                rooms.remove(aggregator)
                continue
            case .appended(let lanes):
                for hostname in lanes {
                    deliveries.addTask {
                        await aggregator.runLane(hostname, statistics: self.statistics) { body, epoch in
                            let request = Goim_Comet_BroadcastRoomReq.with {
                                $0.roomID = aggregator.room
                                $0.proto = PushEncoding.envelope(body: body)
                                $0.historyEpoch = epoch
                            }
                            return await delivery.call(hostname) { try await $0.broadcastRoom(request) }
                        }
                    }
                }
                return
            }
        }
    }
}
