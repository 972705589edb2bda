import Synchronization

/// What a background service last found wrong, or nil when its last attempt worked: the registration loop, the online
/// reporter. Readiness probes (`/ready`) read it without waiting on the service.
public final class StatusFlag: Sendable {
    private let problem = Mutex<String?>(nil)

    /// - Parameter initial: the problem until the first attempt (e.g. "not registered yet").
    public init(initial: String?) {
        problem.withLock { $0 = initial }
    }

    public func set(_ value: String?) {
        problem.withLock { $0 = value }
    }

    public var current: String? { problem.withLock { $0 } }
}
