import Prometheus
import Synchronization
import Telemetry

/// Counters of what this job did since it started. Every queue message ends in exactly one of
/// `delivered`, `partiallyDelivered`, `undeliverable`, `rejected`, `malformed` or `abandoned`
/// (the last only at shutdown, when the message is handed back to the queue).
public final class JobStatistics: Sendable {
    /// Messages fetched from JetStream (redeliveries included).
    public let received = Atomic<Int>(0)
    /// Messages every target comet accepted.
    public let delivered = Atomic<Int>(0)
    /// Room or broadcast messages that some comets accepted while others left the registry first.
    public let partiallyDelivered = Atomic<Int>(0)
    /// Messages no comet could take: the named comet (PUSH) or every comet (ROOM, BROADCAST) is not
    /// in the registry. Logged and acknowledged: never a silent drop.
    public let undeliverable = Atomic<Int>(0)
    /// Messages a comet refused as invalid (e.g. goim's "rpc pushmsg arg error"); not retried.
    public let rejected = Atomic<Int>(0)
    /// Queue messages that are not a valid `PushMsg`: logged and terminated, never redelivered.
    public let malformed = Atomic<Int>(0)
    /// Messages still in flight when shutdown's grace period ended: handed back to the queue (nak).
    public let abandoned = Atomic<Int>(0)
    /// Failed comet calls that were retried.
    public let retries = Atomic<Int>(0)
    /// Deliveries to a comet not attempted because it was stuck (`CometHealth`): a call skipped, or a room message
    /// not queued (or given up) for that comet. Their messages count as partially delivered (or undeliverable).
    public let skippedCalls = Atomic<Int>(0)
    /// Comet RPCs that succeeded (one `BroadcastRoom` may carry many messages).
    public let cometCalls = Atomic<Int>(0)
    /// `BroadcastRoom` calls and the messages they carried (their ratio is the mean batch size).
    public let roomBatches = Atomic<Int>(0)
    public let roomBatchedMessages = Atomic<Int>(0)
    /// Acknowledgements that failed even after retrying (the message will be redelivered).
    public let ackFailures = Atomic<Int>(0)
    /// Messages this job had delivered and acknowledged that came back (the ack was lost: NATS restarted before it
    /// stored it): acknowledged again, not sent again.
    public let redeliveriesSkipped = Atomic<Int>(0)
    /// Room messages written to their room's history (each got an offset), and writes that failed (the message
    /// went out without an offset and the room's next write starts a new epoch).
    public let historyWrites = Atomic<Int>(0)
    public let historyFailures = Atomic<Int>(0)
    /// Messages received again (JetStream's delivery count above 1), and settlements that reached the server.
    public let redelivered = Atomic<Int>(0)
    public let acked = Atomic<Int>(0)
    public let nakked = Atomic<Int>(0)
    public let terminated = Atomic<Int>(0)
    /// Where the per-comet call latencies go (`recordCometCall`), and the rest of job's metrics.
    public let telemetry: Telemetry
    private let cometCallMetrics = Mutex<[String: (latency: DurationHistogram, failures: Prometheus.Counter)]>([:])

    public init(telemetry: Telemetry = Telemetry()) {
        self.telemetry = telemetry
    }

    /// One comet RPC's latency, by comet (comets are few; the label is the registry hostname).
    func recordCometCall(_ hostname: String, rpc: String, _ duration: Duration, success: Bool) {
        let key = hostname + "/" + rpc
        let metrics = cometCallMetrics.withLock { calls in
            if let existing = calls[key] { return existing }
            let labels = [("comet", hostname), ("rpc", rpc)]
            let created = (
                latency: telemetry.latency(
                    "goim_job_comet_call_duration_seconds", "Latency of push RPCs to each comet, by comet and RPC.", labels: labels),
                failures: telemetry.counter(
                    "goim_job_comet_call_failures_total", "Push RPCs to each comet that failed (each retry counts).", labels: labels)
            )
            calls[key] = created
            return created
        }
        metrics.latency.record(duration)
        if !success { metrics.failures.increment() }
    }

    /// A plain copy of the counters.
    public var snapshot: Snapshot {
        Snapshot(
            received: received.load(ordering: .relaxed),
            delivered: delivered.load(ordering: .relaxed),
            partiallyDelivered: partiallyDelivered.load(ordering: .relaxed),
            undeliverable: undeliverable.load(ordering: .relaxed),
            rejected: rejected.load(ordering: .relaxed),
            malformed: malformed.load(ordering: .relaxed),
            abandoned: abandoned.load(ordering: .relaxed),
            retries: retries.load(ordering: .relaxed),
            skippedCalls: skippedCalls.load(ordering: .relaxed),
            cometCalls: cometCalls.load(ordering: .relaxed),
            roomBatches: roomBatches.load(ordering: .relaxed),
            roomBatchedMessages: roomBatchedMessages.load(ordering: .relaxed),
            ackFailures: ackFailures.load(ordering: .relaxed),
            redeliveriesSkipped: redeliveriesSkipped.load(ordering: .relaxed),
            historyWrites: historyWrites.load(ordering: .relaxed),
            historyFailures: historyFailures.load(ordering: .relaxed)
        )
    }

    public struct Snapshot: Sendable, Equatable, CustomStringConvertible {
        public var received: Int
        public var delivered: Int
        public var partiallyDelivered: Int
        public var undeliverable: Int
        public var rejected: Int
        public var malformed: Int
        public var abandoned: Int
        public var retries: Int
        public var skippedCalls: Int = 0
        public var cometCalls: Int
        public var roomBatches: Int
        public var roomBatchedMessages: Int
        public var ackFailures: Int
        public var redeliveriesSkipped: Int = 0
        public var historyWrites: Int = 0
        public var historyFailures: Int = 0

        /// Messages that reached a final outcome (acknowledged or terminated).
        public var finished: Int { delivered + partiallyDelivered + undeliverable + rejected + malformed }

        public var description: String {
            "received=\(received) delivered=\(delivered) partial=\(partiallyDelivered) undeliverable=\(undeliverable) "
                + "rejected=\(rejected) malformed=\(malformed) abandoned=\(abandoned) retries=\(retries) skipped=\(skippedCalls) "
                + "cometCalls=\(cometCalls) roomBatches=\(roomBatches)/\(roomBatchedMessages) ackFailures=\(ackFailures) "
                + "redeliveriesSkipped=\(redeliveriesSkipped) historyWrites=\(historyWrites) historyFailures=\(historyFailures)"
        }
    }
}

extension Atomic<Int> {
    @inline(__always)
    func increment(by amount: Int = 1) { _ = wrappingAdd(amount, ordering: .relaxed) }
}
