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

    struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    let limits: Limits
    private let buckets = Mutex<[String: Bucket]>([:])
    private let inFlight = Atomic<Int>(0)
    private let clock = ContinuousClock()

    public init(limits: Limits) {
        self.limits = limits
    }

    /// Takes a token for `address` and a slot; on success the caller must `finish()` when the request is done.
    public func admit(_ address: SocketAddress?, now: ContinuousClock.Instant? = nil) -> Refusal? {
        if limits.ratePerIP > 0, let ip = address?.ipAddress, !IPAddressLiteral.isLoopback(ip) {
            if let retry = takeToken(ip, now: now ?? clock.now) { return .rate(retryAfterSeconds: retry) }
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

    /// nil when a token was taken, else the whole seconds until one is there.
    private func takeToken(_ ip: String, now: ContinuousClock.Instant) -> Int? {
        let rate = limits.ratePerIP
        let burst = Double(max(1, limits.burstPerIP))
        return buckets.withLock { buckets in
            var bucket = buckets[ip] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + max(0, seconds) * rate)
            bucket.updated = now
            guard bucket.tokens >= 1 else {
                buckets[ip] = bucket
                return max(1, Int(((1 - bucket.tokens) / rate).rounded(.up)))
            }
            bucket.tokens -= 1
            if buckets[ip] == nil, buckets.count >= limits.maxTrackedIPs {
                Self.forgetIdle(&buckets, now: now, rate: rate, burst: burst, keep: limits.maxTrackedIPs)
            }
            buckets[ip] = bucket
            return nil
        }
    }

    /// Drops the buckets that have refilled (their IPs would start full anyway); if none has, the table is cleared:
    /// a flood of distinct addresses must not grow memory without bound.
    private static func forgetIdle(
        _ buckets: inout [String: Bucket], now: ContinuousClock.Instant, rate: Double, burst: Double, keep: Int
    ) {
        let full = Duration.seconds(burst / rate)
        buckets = buckets.filter { now - $0.value.updated < full }
        if buckets.count >= keep { buckets.removeAll() }
    }

    /// Buckets currently kept (tests).
    var trackedIPs: Int { buckets.withLock { $0.count } }
}
