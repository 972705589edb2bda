import NATS
import Telemetry

/// Job's Prometheus families (docs/operations.md), collected at scrape time from `JobStatistics` (one atomic add per
/// message or call where it happens), the consumer (in flight, JetStream's view of the backlog) and the comet pool.
/// Per-comet call latencies are recorded per call by `JobStatistics.recordCometCall`.
enum JobMetrics {
    static func register(_ t: Telemetry, statistics: JobStatistics, consumer: JobConsumer, pool: CometPool) {
        let received = t.mirror("goim_job_messages_received_total", "Queue messages fetched from JetStream, redeliveries included.")
        let redelivered = t.mirror("goim_job_messages_redelivered_total", "Queue messages fetched again (JetStream delivery count above 1).")
        func outcome(_ name: String) -> CounterMirror {
            t.mirror("goim_job_messages_finished_total", "Queue messages by how they ended (each ends exactly once).", labels: [("outcome", name)])
        }
        let delivered = outcome("delivered"), partial = outcome("partial"), undeliverable = outcome("undeliverable")
        let rejected = outcome("rejected"), malformed = outcome("malformed"), abandoned = outcome("abandoned")
        let alreadyDelivered = outcome("already_delivered")
        func settled(_ how: String) -> CounterMirror {
            t.mirror("goim_job_messages_settled_total", "Acknowledgements sent to JetStream, by kind.", labels: [("kind", how)])
        }
        let acked = settled("ack"), nakked = settled("nak"), terminated = settled("term")
        let ackFailures = t.mirror("goim_job_ack_failures_total", "Acknowledgements that failed after retries (the message comes back).")
        let retries = t.mirror("goim_job_comet_retries_total", "Comet calls retried after a transient failure.")
        let skipped = t.mirror("goim_job_comet_skipped_total", "Deliveries not attempted because the comet was stuck.")
        let calls = t.mirror("goim_job_comet_calls_total", "Comet push RPCs that succeeded.")
        let batches = t.mirror("goim_job_room_batches_total", "BroadcastRoom calls sent.")
        let batched = t.mirror("goim_job_room_batched_messages_total", "Room messages carried by BroadcastRoom calls.")
        let historyWrites = t.mirror("goim_job_history_writes_total", "Room messages written to history (given an offset).")
        let historyFailures = t.mirror("goim_job_history_write_failures_total", "History writes that failed (the message went out without an offset).")
        let inFlight = t.gauge("goim_job_messages_in_flight", "Messages fetched and not yet acknowledged by this job.")
        let pending = t.gauge("goim_job_consumer_pending_messages", "Messages in the stream the durable consumer has not delivered yet (lag), from JetStream.")
        let ackPending = t.gauge("goim_job_consumer_ack_pending_messages", "Messages delivered by JetStream and not acknowledged yet (all jobs).")
        let redeliveredPending = t.gauge("goim_job_consumer_redelivered_messages", "Messages JetStream redelivered and that are not acknowledged yet.")
        let comets = t.gauge("goim_job_comets", "Comets this job knows from the registry.")
        let consuming = t.gauge("goim_job_consuming", "1 while bound to the durable consumer.")

        t.collect {
            let s = statistics.snapshot
            received.update(to: s.received)
            delivered.update(to: s.delivered)
            partial.update(to: s.partiallyDelivered)
            undeliverable.update(to: s.undeliverable)
            rejected.update(to: s.rejected)
            malformed.update(to: s.malformed)
            abandoned.update(to: s.abandoned)
            alreadyDelivered.update(to: s.redeliveriesSkipped)
            ackFailures.update(to: s.ackFailures)
            retries.update(to: s.retries)
            skipped.update(to: s.skippedCalls)
            calls.update(to: s.cometCalls)
            batches.update(to: s.roomBatches)
            batched.update(to: s.roomBatchedMessages)
            historyWrites.update(to: s.historyWrites)
            historyFailures.update(to: s.historyFailures)
            redelivered.update(to: statistics.redelivered.load(ordering: .relaxed))
            acked.update(to: statistics.acked.load(ordering: .relaxed))
            nakked.update(to: statistics.nakked.load(ordering: .relaxed))
            terminated.update(to: statistics.terminated.load(ordering: .relaxed))
            inFlight.set(Int64(consumer.inFlightCount))
            consuming.set(Int64(consumer.isConsuming ? 1 : 0))
            comets.set(Int64(pool.comets.count))
            if let backlog = await consumer.backlog() {
                pending.set(Int64(clamping: backlog.pending))
                ackPending.set(Int64(backlog.ackPending))
                redeliveredPending.set(Int64(backlog.redelivered))
            }
        }
    }
}
