import Synchronization

/// Whether each comet makes progress, so that one comet that cannot be reached never holds up the others.
///
/// A comet is **stuck** when calls to it have been outstanding for `skipAfter` without any call completing, or when
/// every call has failed for `skipAfter`. While it is stuck, one call at a time (the probe) still tries it, with the
/// usual retries; every other call is skipped at once and its message counted as not delivered to that comet. So a
/// comet that is registered but unreachable (a partition, a stopped process) holds no room queue, no in-flight slot
/// and no acknowledgement for longer than about `skipAfter` plus one call's deadline. The first call that succeeds
/// (the probe's, normally) makes it healthy again. A comet that is merely slow keeps completing calls and is never
/// skipped: it is throttled by back-pressure instead.
final class CometHealth: Sendable {
    enum Admission: Equatable {
        case call
        /// The comet is stuck and this call tries it anyway; report it with `finished(probe: true)`.
        case probe
        case skip
    }

    private struct State {
        var outstanding = 0
        /// The last time a call completed, or the comet went from idle to busy.
        var progressAt: ContinuousClock.Instant
        var failingSince: ContinuousClock.Instant?
        var probing = false

        func isStuck(now: ContinuousClock.Instant, after limit: Duration) -> Bool {
            if outstanding > 0, now - progressAt > limit { return true }
            if let failingSince, now - failingSince > limit { return true }
            return false
        }
    }

    let skipAfter: Duration
    private let states = Mutex<[String: State]>([:])
    /// Where skips are counted (`skippedCalls`).
    let statistics: JobStatistics?

    init(skipAfter: Duration, statistics: JobStatistics? = nil) {
        self.skipAfter = skipAfter
        self.statistics = statistics
    }

    /// Counts deliveries to a stuck comet that were not attempted.
    func recordSkipped(_ count: Int = 1) {
        statistics?.skippedCalls.increment(by: count)
    }

    /// Decides whether a call to `hostname` goes ahead; `.call` and `.probe` must be followed by `finished`.
    func admit(_ hostname: String, now: ContinuousClock.Instant = .now) -> Admission {
        states.withLock { states in
            var state = states[hostname] ?? State(progressAt: now)
            defer { states[hostname] = state }
            if state.isStuck(now: now, after: skipAfter) {
                guard !state.probing else { return .skip }
                state.probing = true
                state.outstanding += 1
                return .probe
            }
            if state.outstanding == 0 { state.progressAt = now }
            state.outstanding += 1
            return .call
        }
    }

    func finished(_ hostname: String, success: Bool, admission: Admission, now: ContinuousClock.Instant = .now) {
        states.withLock { states in
            guard var state = states[hostname] else { return }
            state.outstanding -= 1
            if admission == .probe { state.probing = false }
            if success {
                state.progressAt = now
                state.failingSince = nil
            } else if state.failingSince == nil {
                state.failingSince = now
            }
            states[hostname] = state
        }
    }

    func isStuck(_ hostname: String, now: ContinuousClock.Instant = .now) -> Bool {
        states.withLock { $0[hostname]?.isStuck(now: now, after: skipAfter) ?? false }
    }

    /// Forgets a comet that left the registry.
    func forget(_ hostname: String) {
        _ = states.withLock { $0.removeValue(forKey: hostname) }
    }
}
