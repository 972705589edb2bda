import Synchronization

/// A value published once and awaited by many: a bound port, the addresses of a server that is starting, the end of
/// a connection. The first `publish` or `fail` wins; later ones are ignored, so a late "stopped" never hides a value
/// that was published before.
public final class OnceValue<Value: Sendable>: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Value, any Error>
    }

    private struct State {
        var result: Result<Value, any Error>?
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// The value, if it was published (nil before, and after a failure).
    public var current: Value? {
        state.withLock { state in
            if case .success(let value) = state.result { return value }
            return nil
        }
    }

    /// Whether a value or a failure was published.
    public var isSettled: Bool { state.withLock { $0.result != nil } }

    public func publish(_ value: Value) { settle(.success(value)) }

    public func fail(_ error: any Error) { settle(.failure(error)) }

    /// Publishes `result` unless something was published before; returns whether this call won.
    @discardableResult
    public func settle(_ result: Result<Value, any Error>) -> Bool {
        let waiters = state.withLock { state -> [Waiter]? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        guard let waiters else { return false }
        for waiter in waiters { waiter.continuation.resume(with: result) }
        return true
    }

    /// Waits for the value; throws the published failure, or `CancellationError` if the task is cancelled first.
    public func value() async throws -> Value {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                let now = state.withLock { state -> Result<Value, any Error>? in
                    if let result = state.result { return result }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }
}

extension OnceValue where Value == Void {
    public func publish() { publish(()) }
}
