import NIOCore
import Primitives
import Synchronization

/// Who may start an HTTP request now: a token bucket per client IP (loopback peers are not limited) and a cap on
/// requests in flight. A request refused gets HTTP 429 with goim's envelope at once; nothing queues.
public final class HTTPAdmission: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Requests per second per client IP; 0 = no per-IP limit.
        public var ratePerIP: Double
        /// Requests one IP may make at once above its rate (the bucket's size).
        public var burstPerIP: Int
        /// Requests handled at once, all clients together; 0 = no cap.
        public var maxConcurrentRequests: Int
        /// Buckets kept at most (an IP idle long enough to have a full bucket costs nothing to forget).
        public var maxTrackedIPs: Int = 100_000

        public init(ratePerIP: Double, burstPerIP: Int, maxConcurrentRequests: Int) {
            self.ratePerIP = ratePerIP
            self.burstPerIP = burstPerIP
            self.maxConcurrentRequests = maxConcurrentRequests
        }
    }

    /// Why a request was turned away.
    public enum Refusal: Equatable, Sendable {
        case rate(retryAfterSeconds: Int)
        case concurrency

        var message: String {
            switch self {
            case .rate: "rate limit: too many requests from this address (httpServer.rateLimit)"
            case .concurrency: "overloaded: too many requests in flight (httpServer.maxConcurrentRequests)"
            }
        }
    }

    let limits: Limits
    private let perIP: KeyedRateLimiter?
    private let inFlight = Atomic<Int>(0)

    public init(limits: Limits) {
        self.limits = limits
        perIP =
            limits.ratePerIP > 0
            ? KeyedRateLimiter(rate: limits.ratePerIP, burst: max(1, limits.burstPerIP), maxKeys: limits.maxTrackedIPs) : nil
    }

    /// Takes a token for `address` and a slot; on success the caller must `finish()` when the request is done.
    public func admit(_ address: SocketAddress?, now: ContinuousClock.Instant? = nil) -> Refusal? {
        if let perIP, let ip = address?.ipAddress, !IPAddressLiteral.isLoopback(ip) {
            if let retry = perIP.take(ip, now: now ?? .now) { return .rate(retryAfterSeconds: retry) }
        }
        guard limits.maxConcurrentRequests > 0 else { return nil }
        let (_, current) = inFlight.add(1, ordering: .relaxed)
        if current > limits.maxConcurrentRequests {
            inFlight.subtract(1, ordering: .relaxed)
            return .concurrency
        }
        return nil
    }

    public func finish() {
        if limits.maxConcurrentRequests > 0 { inFlight.subtract(1, ordering: .relaxed) }
    }

    /// Buckets currently kept (tests).
    var trackedIPs: Int { perIP?.trackedKeys ?? 0 }
}
