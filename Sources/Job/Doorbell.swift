import NATS
import Synchronization

/// Wakes the idle consumer when something is published on the push subjects.
///
/// libnats' pull (fetch) returns at once when the stream has messages, but in a quiet stream it waits until the
/// whole batch arrived or its timeout passed, so polling a quiet stream costs either latency or CPU (two NATS
/// requests per poll). Instead, an idle consumer waits for this doorbell: a plain NATS subscription on the push
/// subjects whose messages only mean "something was published", plus a slow safety poll (`idlePoll`) for
/// redeliveries, which ring no bell.
final class Doorbell: Sendable {
    private struct State {
        var rung = false
        /// Without a subscription the bell counts as always rung: the consumer polls.
        var broken = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    /// Marks the bell rung and wakes a waiter.
    func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.rung = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Forgets earlier rings (call before a fetch: rings during the fetch then count).
    func reset() {
        state.withLock { $0.rung = $0.broken }
    }

    /// Returns when the bell rang since the last `reset()` (true), after `timeout` or on cancellation (false).
    func wait(timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.waitForRing()
                return self.state.withLock { $0.rung }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let rang = await group.next() ?? false
            group.cancelAll()
            return rang
        }
    }

    private func waitForRing() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.rung || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }

    /// Rings the bell for every message on `subject` until cancelled. If it cannot subscribe, the bell
    /// stays rung (the consumer then polls every `consumer.fetchWait`).
    func listen(_ connection: NATSConnection, subject: String) async throws {
        let subscription: NATSSubscription
        do {
            subscription = try await connection.subscribe(subject, bufferSize: 64)
        } catch {
            state.withLock { $0.broken = true }
            ring()
            throw error
        }
        await withTaskCancellationHandler {
            for await _ in subscription { ring() }
        } onCancel: {
            subscription.unsubscribe()
        }
    }
}
