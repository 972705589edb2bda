import Synchronization

/// Gathers calls that arrive while earlier ones are in flight into batches. At most `lanes` batches are in flight;
/// a call that finds a free lane goes at once, alone, so a quiet comet adds no delay. Under a connect storm the
/// calls queue while the lanes are busy and leave `maxBatch` at a time: one RPC for many connections.
final class CallBatcher<Request: Sendable, Response: Sendable>: Sendable {
    /// Sends one batch; returns one result per request, in order.
    typealias Send = @Sendable ([Request]) async throws -> [Result<Response, any Error>]

    private struct Waiting {
        let request: Request
        let continuation: CheckedContinuation<Response, any Error>
    }

    private struct State {
        var pending: [Waiting] = []
        var busyLanes = 0

        mutating func take(_ count: Int) -> [Waiting] {
            guard !pending.isEmpty else { return [] }
            if pending.count <= count {
                defer { pending = [] }
                return pending
            }
            let batch = Array(pending.prefix(count))
            pending.removeFirst(count)
            return batch
        }
    }

    let lanes: Int
    let maxBatch: Int
    private let send: Send
    private let state = Mutex(State())

    init(lanes: Int, maxBatch: Int, send: @escaping Send) {
        self.lanes = max(1, lanes)
        self.maxBatch = max(1, maxBatch)
        self.send = send
    }

    /// Calls queued for a lane (for tests and diagnostics).
    var waiting: Int { state.withLock { $0.pending.count } }

    func call(_ request: Request) async throws -> Response {
        try await withCheckedThrowingContinuation { continuation in
            let batch = state.withLock { state -> [Waiting] in
                state.pending.append(Waiting(request: request, continuation: continuation))
                guard state.busyLanes < lanes else { return [] }
                state.busyLanes += 1
                return state.take(maxBatch)
            }
            if !batch.isEmpty {
                Task { await self.run(batch) }
            }
        }
    }

    /// One lane: sends `first`, then whatever queued meanwhile, until nothing is waiting.
    private func run(_ first: [Waiting]) async {
        var batch = first
        while !batch.isEmpty {
            let results: [Result<Response, any Error>]
            do {
                results = try await send(batch.map(\.request))
                guard results.count == batch.count else {
                    throw LogicClientError.badReply("a batch of \(batch.count) calls got \(results.count) results")
                }
            } catch {
                for waiting in batch { waiting.continuation.resume(throwing: error) }
                batch = next()
                continue
            }
            for (waiting, result) in zip(batch, results) { waiting.continuation.resume(with: result) }
            batch = next()
        }
    }

    private func next() -> [Waiting] {
        state.withLock { state in
            let batch = state.take(maxBatch)
            if batch.isEmpty { state.busyLanes -= 1 }
            return batch
        }
    }
}
