/// Waits until `condition` holds, checking every 10 ms, for values that have no event to await (a counter another
/// process or thread moves); throws after `timeout`. Prefer awaiting an event where there is one.
public func waitUntil(timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { throw ConditionTimeout(timeout: timeout) }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// `waitUntil` gave up.
public struct ConditionTimeout: Error, CustomStringConvertible {
    public let timeout: Duration
    public var description: String { "condition not met within \(timeout)" }
}
