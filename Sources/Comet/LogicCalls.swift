import Primitives
import Synchronization

/// Runs the short-lived Tasks that call Logic for connections (Connect, Disconnect, Heartbeat, Receive), counting
/// them so shutdown can wait until every Disconnect went out, and bounding how many limited calls (Disconnects)
/// run at once so that closing 100,000 clients does not fire 100,000 RPCs at the same moment.
final class LogicCalls: Sendable {
    private let slots: AsyncSemaphore
    private let count = Mutex(0)
    private let changed = AsyncCondition()

    init(limit: Int) {
        slots = AsyncSemaphore(permits: max(1, limit))
    }

    var inFlight: Int { count.withLock { $0 } }

    /// Starts `body` in a new Task. `limited` calls wait for one of `limit` slots first.
    func spawn(limited: Bool, _ body: @escaping @Sendable () async -> Void) {
        count.withLock { $0 += 1 }
        Task {
            // Never cancelled: this unstructured task is not a child of anything.
            if limited { try? await slots.acquire() }
            await body()
            if limited { slots.release() }
            count.withLock { $0 -= 1 }
            changed.signal()
        }
    }

    /// Returns when no call is in flight, or when the calling task is cancelled.
    func drained() async {
        _ = await changed.wait(until: { inFlight == 0 })
    }
}
