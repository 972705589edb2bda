import CNats
import Dispatch
import Logging
import Synchronization

extension NATSConnection {
    /// Subscribes to `subject` (wildcards allowed); with `queue`, each message goes to one member
    /// of the queue group. Returns once the server has the interest (or, while disconnected, it is
    /// registered on reconnect).
    ///
    /// Back-pressure: at most `bufferSize` messages wait in the subscription. When it is full,
    /// libnats' delivery thread for this subscription waits, so further messages queue inside
    /// libnats; past `NATSConfiguration.maxPendingMessages` libnats drops them, counts them in
    /// `droppedMessages` and reports a slow consumer (logged as a warning).
    public func subscribe(_ subject: String, queue: String? = nil, bufferSize: Int = 1024) async throws -> NATSSubscription {
        precondition(bufferSize > 0, "bufferSize must be positive")
        let (stream, continuation) = AsyncStream.makeStream(of: NATSMessage.self)  // bounded by `delivery`'s slots
        let delivery = SubscriptionDelivery(continuation: continuation, bufferSize: bufferSize)
        continuation.onTermination = { [weak delivery] _ in delivery?.stop() }

        // Ownership: libnats holds this +1 reference to `delivery` for the message callback;
        // the completion callback (called once, after the last message callback) releases it.
        let closure = Unmanaged.passRetained(delivery).toOpaque()
        var subscription: OpaquePointer?
        let status = subject.withCString { subject in
            withOptionalCString(queue) { queue in
                if let queue {
                    return natsConnection_QueueSubscribe(&subscription, connection, subject, queue, onMessage, closure)
                }
                return natsConnection_Subscribe(&subscription, connection, subject, onMessage, closure)
            }
        }
        guard status == NATS_OK, let subscription else {
            let error = NATSError(status, "subscribe to \(subject)")
            Unmanaged<SubscriptionDelivery>.fromOpaque(closure).release()
            continuation.finish()
            throw error
        }
        if natsSubscription_SetOnCompleteCB(subscription, onComplete, closure) != NATS_OK {
            // Already closed (the connection closed meanwhile). A message callback may still be
            // running, so the +1 is deliberately leaked rather than released.
            delivery.stop()
            continuation.finish()
        }
        try? await flush()
        return NATSSubscription(connection: self, subscription: subscription, delivery: delivery, stream: stream)
    }
}

/// Messages of one subscription, in order. Iterate it once, from one task; the sequence ends
/// after `unsubscribe()` or when the connection closes. Ending the iteration by cancelling its
/// task makes further messages be discarded until you call `unsubscribe()`.
public final class NATSSubscription: AsyncSequence, @unchecked Sendable {
    // @unchecked Sendable: `subscription` is created before init and destroyed only in deinit, and
    // libnats subscriptions are thread-safe; the other stored properties are Sendable.
    public typealias Element = NATSMessage

    let connection: NATSConnection
    private let subscription: OpaquePointer
    private let delivery: SubscriptionDelivery
    private let stream: AsyncStream<NATSMessage>

    init(connection: NATSConnection, subscription: OpaquePointer, delivery: SubscriptionDelivery, stream: AsyncStream<NATSMessage>) {
        self.connection = connection
        self.subscription = subscription
        self.delivery = delivery
        self.stream = stream
    }

    deinit {
        delivery.stop()
        natsSubscription_Destroy(subscription)  // unsubscribes if still active
    }

    /// Removes the interest; messages already buffered are still delivered, then the sequence ends.
    public func unsubscribe() {
        delivery.stop()
        _ = natsSubscription_Unsubscribe(subscription)  // fails only when already closed
    }

    /// Messages libnats dropped because this subscription fell too far behind (slow consumer).
    public var droppedMessages: Int64 {
        var dropped: Int64 = 0
        _ = natsSubscription_GetDropped(subscription, &dropped)
        return dropped
    }

    /// Messages handed to this subscription's buffer and not yet read (at most its `bufferSize`).
    public var bufferedMessages: Int { delivery.buffered }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), delivery: delivery)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<NATSMessage>.AsyncIterator
        let delivery: SubscriptionDelivery

        public mutating func next() async -> NATSMessage? {
            guard let message = await base.next() else { return nil }
            delivery.consumed()
            return message
        }
    }
}

/// The bounded hand-over from libnats' delivery thread to the subscription's iterator.
final class SubscriptionDelivery: Sendable {
    private let continuation: AsyncStream<NATSMessage>.Continuation
    /// Free places in the stream's buffer. Starts at 0 and is raised with signal(): libdispatch
    /// traps when a semaphore is freed below its initial value.
    private let slots = DispatchSemaphore(value: 0)
    private let stopped = Atomic<Bool>(false)
    private let waiting = Atomic<Int>(0)

    var buffered: Int { waiting.load(ordering: .relaxed) }

    init(continuation: AsyncStream<NATSMessage>.Continuation, bufferSize: Int) {
        self.continuation = continuation
        for _ in 0..<bufferSize { slots.signal() }
    }

    /// On libnats' delivery thread (never a Swift or NIO thread): waits while the buffer is full.
    func deliver(_ message: NATSMessage) {
        guard !stopped.load(ordering: .acquiring) else { return }
        slots.wait()
        guard !stopped.load(ordering: .acquiring) else {
            slots.signal()
            return
        }
        waiting.add(1, ordering: .relaxed)
        continuation.yield(message)
    }

    func consumed() {
        waiting.subtract(1, ordering: .relaxed)
        slots.signal()
    }

    /// No more messages are wanted: wakes a delivery waiting for room; later ones are dropped.
    func stop() {
        if !stopped.exchange(true, ordering: .acquiringAndReleasing) { slots.signal() }
    }

    /// The subscription is closed and its last message callback has returned.
    func complete() {
        stop()
        continuation.finish()
    }
}

// libnats calls these on the subscription's delivery thread; `closure` is the retained SubscriptionDelivery.

private func onMessage(
    _ connection: OpaquePointer?, _ subscription: OpaquePointer?, _ msg: OpaquePointer?, _ closure: UnsafeMutableRawPointer?
) {
    guard let msg else { return }
    let message = NATSMessage(copying: msg)
    natsMsg_Destroy(msg)  // the callback owns the message
    guard let closure else { return }
    Unmanaged<SubscriptionDelivery>.fromOpaque(closure).takeUnretainedValue().deliver(message)
}

private func onComplete(_ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    Unmanaged<SubscriptionDelivery>.fromOpaque(closure).takeRetainedValue().complete()  // the +1 from subscribe
}
