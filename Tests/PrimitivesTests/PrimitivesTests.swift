import Synchronization
import Testing

@testable import Primitives

@Suite("OnceValue")
struct OnceValueTests {
    @Test("many waiters get the first published value; later publishes are ignored")
    func firstWins() async throws {
        let value = OnceValue<Int>()
        #expect(value.current == nil && !value.isSettled)
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<50 { group.addTask { try await value.value() } }
            value.publish(7)
            value.publish(8)
            value.fail(TestError())
            for try await got in group { #expect(got == 7) }
        }
        #expect(value.current == 7)
        #expect(try await value.value() == 7)
    }

    @Test("a failure reaches every waiter and later ones")
    func failure() async {
        let value = OnceValue<String>()
        let waiting = Task { try await value.value() }
        value.fail(TestError())
        value.publish("late")
        await #expect(throws: TestError.self) { try await waiting.value }
        await #expect(throws: TestError.self) { try await value.value() }
        #expect(value.current == nil && value.isSettled)
    }

    @Test("a cancelled waiter throws CancellationError and leaves the others waiting")
    func cancellation() async throws {
        let value = OnceValue<Int>()
        let cancelled = Task { try await value.value() }
        let patient = Task { try await value.value() }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        value.publish(1)
        #expect(try await patient.value == 1)
    }
}

@Suite("AsyncSemaphore")
struct AsyncSemaphoreTests {
    @Test("never more holders than permits; waiters are served in order")
    func bounds() async throws {
        let semaphore = AsyncSemaphore(permits: 3)
        let holders = Holders()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<40 {
                group.addTask {
                    try await semaphore.acquire()
                    holders.enter()
                    await Task.yield()
                    holders.leave()
                    semaphore.release()
                }
            }
            try await group.waitForAll()
        }
        #expect(holders.most <= 3)
        #expect(semaphore.available == 3)
    }

    @Test("tryAcquire takes what is free without waiting; a cancelled waiter throws and frees its place")
    func tryAndCancel() async throws {
        let semaphore = AsyncSemaphore(permits: 2)
        #expect(semaphore.tryAcquire(upTo: 5) == 2)
        #expect(semaphore.tryAcquire(upTo: 1) == 0)
        let waiter = Task { try await semaphore.acquire() }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        semaphore.release(2)
        #expect(semaphore.available == 2)
    }
}

@Suite("AsyncCondition")
struct AsyncConditionTests {
    @Test("a waiter wakes on the signal after the change that satisfies it, not by polling")
    func wakes() async {
        let condition = AsyncCondition()
        let counter = Holders()
        let done = Task { await condition.wait(until: { counter.most >= 3 }) }
        for _ in 0..<3 {
            counter.enter()
            condition.signal()
        }
        #expect(await done.value)
    }

    @Test("returns false at the deadline when the predicate never holds")
    func deadline() async {
        let condition = AsyncCondition()
        let start = ContinuousClock.now
        let result = await condition.wait(until: { false }, deadline: .now + .milliseconds(50))
        #expect(!result)
        #expect(ContinuousClock.now - start >= .milliseconds(50))
    }

    @Test("a cancelled waiter returns false")
    func cancelled() async {
        let condition = AsyncCondition()
        let task = Task { await condition.wait(until: { false }) }
        task.cancel()
        #expect(await task.value == false)
    }
}

@Suite("IPAddressLiteral")
struct IPAddressLiteralTests {
    @Test("tells IPv4 and IPv6 literals from host names")
    func kinds() {
        #expect(IPAddressLiteral("127.0.0.1") == .v4)
        #expect(IPAddressLiteral("10.1.2.3") == .v4)
        #expect(IPAddressLiteral("::1") == .v6)
        #expect(IPAddressLiteral("[fe80::1]") == .v6)
        #expect(IPAddressLiteral("comet-1") == nil)
        #expect(IPAddressLiteral("1.2.3") == nil)
        #expect(IPAddressLiteral("256.1.1.1") == nil)
        #expect(IPAddressLiteral("") == nil)
    }

    @Test("URL host form and wildcard binds")
    func forms() {
        #expect(IPAddressLiteral.hostForURL("::1") == "[::1]")
        #expect(IPAddressLiteral.hostForURL("[::1]") == "[::1]")
        #expect(IPAddressLiteral.hostForURL("10.0.0.1") == "10.0.0.1")
        #expect(IPAddressLiteral.isWildcard("0.0.0.0") && IPAddressLiteral.isWildcard("::") && IPAddressLiteral.isWildcard(""))
        #expect(!IPAddressLiteral.isWildcard("127.0.0.1"))
    }
}

struct TestError: Error {}

/// How many hold something now, and the most at once.
final class Holders: Sendable {
    private let state = Mutex((now: 0, most: 0))
    func enter() { state.withLock { $0.now += 1; $0.most = max($0.most, $0.now) } }
    func leave() { state.withLock { $0.now -= 1 } }
    var most: Int { state.withLock { $0.most } }
}
