import Synchronization

/// A token bucket per key (a client IP): `rate` tokens a second, at most `burst` saved up. The table of buckets is
/// bounded: past `maxKeys`, buckets that have refilled are forgotten (their keys would start full anyway), and if
/// none has, the table is cleared, so a flood of distinct keys cannot grow memory without bound.
public final class KeyedRateLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    public let rate: Double
    public let burst: Int
    public let maxKeys: Int
    private let buckets = Mutex<[String: Bucket]>([:])

    /// - Parameters:
    ///   - rate: tokens per second (> 0).
    ///   - burst: bucket size (≥ 1).
    public init(rate: Double, burst: Int, maxKeys: Int = 100_000) {
        precondition(rate > 0 && burst >= 1 && maxKeys >= 1)
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
    }

    /// Takes a token for `key`: nil when there was one, else the whole seconds until there is.
    public func take(_ key: String, now: ContinuousClock.Instant = .now) -> Int? {
        let (rate, burst, maxKeys) = (self.rate, Double(self.burst), self.maxKeys)
        return buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + max(0, seconds) * rate)
            bucket.updated = now
            guard bucket.tokens >= 1 else {
                buckets[key] = bucket
                return max(1, Int(((1 - bucket.tokens) / rate).rounded(.up)))
            }
            bucket.tokens -= 1
            if buckets[key] == nil, buckets.count >= maxKeys {
                let full = Duration.seconds(burst / rate)
                buckets = buckets.filter { now - $0.value.updated < full }
                if buckets.count >= maxKeys { buckets.removeAll() }
            }
            buckets[key] = bucket
            return nil
        }
    }

    /// Keys with a bucket now.
    public var trackedKeys: Int { buckets.withLock { $0.count } }
}
