import NIOCore
import Synchronization

/// Counting semaphore for tasks: `acquire()` suspends (FIFO) while no permit is free and throws
/// `CancellationError` if its task is cancelled while waiting.
public final class AsyncSemaphore: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var available: Int
        var waiters = CircularBuffer<Waiter>()
        var nextID: UInt64 = 0
    }

    private let state: Mutex<State>

    public init(permits: Int) {
        precondition(permits > 0, "a semaphore needs at least one permit")
        state = Mutex(State(available: permits))
    }

    /// Permits free right now.
    public var available: Int { state.withLock { $0.available } }

    public func acquire() async throws {
        let id = state.withLock { state -> UInt64? in
            if state.available > 0 && state.waiters.isEmpty {
                state.available -= 1
                return nil
            }
            defer { state.nextID += 1 }
            return state.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let cancelled = state.withLock { state -> Bool in
                    if Task.isCancelled { return true }
                    if state.available > 0 && state.waiters.isEmpty {
                        state.available -= 1
                        continuation.resume()
                        return false
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return false
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Takes up to `count` permits without waiting; returns how many it got.
    public func tryAcquire(upTo count: Int) -> Int {
        guard count > 0 else { return 0 }
        return state.withLock { state in
            guard state.waiters.isEmpty else { return 0 }
            let taken = min(count, state.available)
            state.available -= taken
            return taken
        }
    }

    public func release(_ count: Int = 1) {
        guard count > 0 else { return }
        let woken = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.available += count
            var woken: [CheckedContinuation<Void, any Error>] = []
            while state.available > 0, let waiter = state.waiters.popFirst() {
                state.available -= 1
                woken.append(waiter.continuation)
            }
            return woken
        }
        for continuation in woken { continuation.resume() }
    }
}
