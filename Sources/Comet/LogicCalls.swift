import Synchronization

/// Runs the short-lived Tasks that call Logic for connections (Connect, Disconnect, Heartbeat, Receive), counting
/// them so shutdown can wait until every Disconnect went out, and bounding how many limited calls (Disconnects)
/// run at once so that closing 100,000 clients does not fire 100,000 RPCs at the same moment.
final class LogicCalls: Sendable {
    private struct State {
        var inFlight = 0
        var running = 0
        var queue: [CheckedContinuation<Void, Never>] = []
        var queueHead = 0
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    var inFlight: Int { state.withLock { $0.inFlight } }

    /// Starts `body` in a new Task. `limited` calls wait for one of `limit` slots first.
    func spawn(limited: Bool, _ body: @escaping @Sendable () async -> Void) {
        state.withLock { $0.inFlight += 1 }
        Task {
            if limited { await acquire() }
            await body()
            if limited { release() }
            finish()
        }
    }

    private func acquire() async {
        let granted = state.withLock { state -> Bool in
            if state.running < limit {
                state.running += 1
                return true
            }
            return false
        }
        if granted { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                // A slot may have been freed between the check above and now.
                if state.running < limit {
                    state.running += 1
                    return true
                }
                state.queue.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.queueHead < state.queue.count {
                let continuation = state.queue[state.queueHead]
                state.queueHead += 1
                if state.queueHead > 1024 && state.queueHead * 2 > state.queue.count {
                    state.queue.removeFirst(state.queueHead)
                    state.queueHead = 0
                }
                return continuation  // the slot passes to it: `running` is unchanged
            }
            state.running -= 1
            return nil
        }
        next?.resume()
    }

    private func finish() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.inFlight -= 1
            guard state.inFlight == 0 else { return [] }
            defer { state.drainWaiters = [] }
            return state.drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when no call is in flight.
    func drained() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.inFlight == 0 { return true }
                state.drainWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
