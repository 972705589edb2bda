import Synchronization

/// Whether each comet makes progress, so that one comet that cannot be reached never holds up the others.
///
/// A comet is **stuck** when every call to it has failed for `skipAfter` (a failure includes a call that reached its
/// deadline, `comet.timeout`), or when calls have been outstanding for `callTimeout + skipAfter` without any call
/// finishing at all (past every deadline: something is wedged). While it is stuck, one call at a time (the probe)
/// still tries it, with the usual retries; every other call is skipped at once and its message counted as not
/// delivered to that comet. So a comet that is registered but unreachable (a partition, a stopped process) holds no
/// room queue, no in-flight slot and no acknowledgement for longer than about one call's deadline plus `skipAfter`.
/// The first call that succeeds (the probe's, normally) makes it healthy again. A comet that is merely slow or
/// overloaded still completes calls within their deadline and is never skipped: back-pressure throttles it
/// instead. (Counting a busy comet as stuck after `skipAfter` of slow calls lost pushes to a healthy, overloaded
/// comet in the fault tests; a wrong skip loses messages, a late one only delays them.)
final class CometHealth: Sendable {
    enum Admission: Equatable {
        case call
        /// The comet is stuck and this call tries it anyway; report it with `finished(probe: true)`.
        case probe
        case skip
    }

    private struct State {
        var outstanding = 0
        /// The last time a call finished (succeeded or failed), or the comet went from idle to busy.
        var progressAt: ContinuousClock.Instant
        var failingSince: ContinuousClock.Instant?
        var probing = false
        var lastSuccess: ContinuousClock.Instant?

        func isStuck(now: ContinuousClock.Instant, failing limit: Duration, wedged wedgedLimit: Duration) -> Bool {
            if let failingSince, now - failingSince > limit { return true }
            if outstanding > 0, now - progressAt > wedgedLimit { return true }
            return false
        }
    }

    let skipAfter: Duration
    /// The deadline of one call (`comet.timeout`).
    let callTimeout: Duration
    private let states = Mutex<[String: State]>([:])
    /// Where skips are counted (`skippedCalls`).
    let statistics: JobStatistics?

    init(skipAfter: Duration, callTimeout: Duration, statistics: JobStatistics? = nil) {
        self.skipAfter = skipAfter
        self.callTimeout = callTimeout
        self.statistics = statistics
    }

    private func stuck(_ state: State, now: ContinuousClock.Instant) -> Bool {
        state.isStuck(now: now, failing: skipAfter, wedged: callTimeout + skipAfter)
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
            if stuck(state, now: now) {
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
            state.progressAt = now
            if success {
                state.failingSince = nil
                state.lastSuccess = now
            } else if state.failingSince == nil {
                state.failingSince = now
            }
            states[hostname] = state
        }
    }

    func isStuck(_ hostname: String, now: ContinuousClock.Instant = .now) -> Bool {
        states.withLock { states in states[hostname].map { stuck($0, now: now) } ?? false }
    }

    /// Whether `hostname` still answers: a call to it succeeded within `window` and it is not stuck (its calls have not
    /// all failed for `skipAfter`). A call that timed out on an overloaded machine does not make it stop answering; a
    /// killed comet refuses every call and is stuck after `skipAfter`.
    func answered(_ hostname: String, within window: Duration, now: ContinuousClock.Instant = .now) -> Bool {
        states.withLock { states in
            guard let state = states[hostname], let last = state.lastSuccess, !stuck(state, now: now) else { return false }
            return now - last <= window
        }
    }

    /// Forgets a comet that left the registry.
    func forget(_ hostname: String) {
        _ = states.withLock { $0.removeValue(forKey: hostname) }
    }
}
