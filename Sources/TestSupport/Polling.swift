/// Waiting in tests for state that has no event to await (a counter another process moves, a key in Redis): the
/// condition is checked every 10 ms. Prefer awaiting an event where there is one.

/// Whether `condition` held within `timeout`.
public func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

/// Returns once `condition` holds; throws `ConditionTimeout` naming `what` after `timeout`.
public func waitUntil(
    _ what: String = "condition", timeout: Duration = .seconds(10), _ condition: () async throws -> Bool
) async throws {
    guard try await eventually(timeout: timeout, condition) else { throw ConditionTimeout(what: what, timeout: timeout) }
}

/// `waitUntil` gave up.
public struct ConditionTimeout: Error, CustomStringConvertible {
    public let what: String
    public let timeout: Duration

    public init(what: String, timeout: Duration) {
        self.what = what
        self.timeout = timeout
    }

    public var description: String { "timed out after \(timeout) waiting for \(what)" }
}
