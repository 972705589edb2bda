import Synchronization

/// Lets tasks wait until some state, kept elsewhere, satisfies a predicate, without polling: whoever changes that
/// state calls `signal()`, and each waiter checks its predicate again. A signal between a waiter's check and its
/// suspension is never lost (the waiter compares a generation number taken before the check).
public final class AsyncCondition: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Wakes every waiter so it re-checks its predicate. Call it after each change that may matter to one.
    public func signal() {
        let waiters = state.withLock { state -> Dictionary<UInt64, CheckedContinuation<Void, Never>>.Values? in
            state.generation &+= 1
            guard !state.waiters.isEmpty else { return nil }
            defer { state.waiters = [:] }
            return state.waiters.values
        }
        waiters?.forEach { $0.resume() }
    }

    /// Returns true as soon as `predicate` holds (checked now and after each `signal()`); false once `deadline`
    /// passed or the task was cancelled with the predicate still false.
    public func wait(until predicate: () -> Bool, deadline: ContinuousClock.Instant? = nil) async -> Bool {
        while true {
            let generation = state.withLock { $0.generation }
            if predicate() { return true }
            if Task.isCancelled { return false }
            if let deadline {
                guard ContinuousClock.now < deadline else { return false }
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.waitForSignal(after: generation) }
                    group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
                    await group.next()
                    group.cancelAll()
                }
            } else {
                await waitForSignal(after: generation)
            }
        }
    }

    /// Returns after the next signal following `generation` (at once if it came already), or on cancellation.
    private func waitForSignal(after generation: UInt64) async {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.generation != generation || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
