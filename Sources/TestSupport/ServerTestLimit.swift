import Foundation
import Primitives
import Testing

/// Limits how many tests that start real servers run at the same time.
///
/// Swift Testing starts every test of a non-serialized suite at once, and all test targets share one process: left
/// alone, dozens of tests each start a redis-server, a nats-server and a logic or comet on a two-core CI machine,
/// and their timeouts (a 500 ms Redis connect, a 5 s gRPC deadline) fire because nothing gets the CPU in time.
/// `GOIM_TEST_SERVER_TESTS` sets the limit (default: twice the number of cores, at least 2).
///
/// Each test also gets a time limit counted from the moment it holds its permit (Swift Testing's `.timeLimit` would
/// count the wait too): past it, an issue is recorded and the test is cancelled.
public struct ServerTestLimit: TestTrait, SuiteTrait, TestScoping {
    public var isRecursive: Bool { true }
    public var timeLimit: Duration

    static let limit: Int = {
        if let value = ProcessInfo.processInfo.environment["GOIM_TEST_SERVER_TESTS"], let limit = Int(value), limit > 0 {
            return limit
        }
        return max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)
    }()
    static let permits = AsyncSemaphore(permits: limit)

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // Only test functions take a permit: a suite holding one while its tests wait for theirs would deadlock.
        guard !test.isSuite, testCase != nil else { return try await function() }
        try await Self.permits.acquire()
        defer { Self.permits.release() }
        let limit = self.timeLimit
        // The task group awaits both children before returning, so `function` does not outlive this call.
        try await withoutActuallyEscaping(function) { function in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    try await function()
                    return true
                }
                group.addTask {
                    try await Task.sleep(for: limit)
                    return false
                }
                if try await group.next() == false {
                    Issue.record("\(test.name) did not finish within \(limit) of starting; cancelled")
                }
                group.cancelAll()
            }
        }
    }
}

extension Trait where Self == ServerTestLimit {
    /// The test (every test of the suite) starts real servers: see `ServerTestLimit`.
    public static var startsServers: Self { ServerTestLimit(timeLimit: .seconds(180)) }
}
