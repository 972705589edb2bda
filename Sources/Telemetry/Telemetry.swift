import CoreMetrics
import Prometheus
import Synchronization

/// One process's metrics (docs/operations.md lists them): a Prometheus registry exported on `GET /metrics`, and the
/// collectors that copy counts kept elsewhere into it when it is scraped.
///
/// Two ways in, chosen by how often a thing happens:
/// - per call (an RPC, an HTTP request, a queue publish): a `Counter` or a latency histogram of the registry, updated
///   where it happens (one lock-free atomic add per call);
/// - per recipient (fan-out writes, bytes): never counted here. Those counts stay plain integers owned by one event
///   loop (or the atomics the services already keep), and a collector reads them at scrape time and moves a
///   `CounterMirror` forward. The hot path pays nothing for metrics.
///
/// Each server gets its own `Telemetry` (tests run several in one process); the executables also make it swift-metrics'
/// global backend, so libraries that report through swift-metrics land on the same `/metrics`.
public final class Telemetry: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// swift-metrics' factory over `registry`.
    public let factory: PrometheusMetricsFactory
    /// Concurrent scrapes are harmless: mirrors only move forward under their own lock, gauges take the last value.
    private let collectors = Mutex<[@Sendable () async -> Void]>([])

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = LatencyBuckets.default
        self.factory = factory
    }

    /// A counter of events (`name` ends in `_total`).
    public func counter(_ name: String, _ help: String, labels: [(String, String)] = []) -> Prometheus.Counter {
        registry.makeCounter(name: name, labels: labels, help: help)
    }

    /// A value that goes up and down (set by a collector, usually).
    public func gauge(_ name: String, _ help: String, labels: [(String, String)] = []) -> Prometheus.Gauge {
        registry.makeGauge(name: name, labels: labels, help: help)
    }

    /// A latency histogram in seconds (`name` ends in `_seconds`).
    public func latency(
        _ name: String, _ help: String, labels: [(String, String)] = [], buckets: [Duration] = LatencyBuckets.default
    ) -> DurationHistogram {
        registry.makeDurationHistogram(name: name, labels: labels, buckets: buckets, help: help)
    }

    /// A counter whose total is kept elsewhere (per event loop, in a service's atomics): `CounterMirror.update(to:)`
    /// in a collector moves it to that total.
    public func mirror(_ name: String, _ help: String, labels: [(String, String)] = []) -> CounterMirror {
        CounterMirror(counter(name, help, labels: labels))
    }

    /// Runs `collect` before every scrape (read the owners' counts, set gauges, update mirrors).
    public func collect(_ collect: @escaping @Sendable () async -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    /// The Prometheus text exposition (format 0.0.4) after running the collectors.
    public func scrape() async -> String {
        for collect in collectors.withLock({ $0 }) { await collect() }
        return registry.emitToString()
    }

    /// The content type of `scrape()`'s text.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}

/// A Prometheus counter that follows a total counted elsewhere: it only moves forward, by the difference since the
/// last update (the owner's total never goes down while the process runs).
public final class CounterMirror: Sendable {
    private let counter: Prometheus.Counter
    private let exported = Mutex<Int64>(0)

    init(_ counter: Prometheus.Counter) {
        self.counter = counter
    }

    public func update(to total: Int) {
        let total = Int64(total)
        exported.withLock { exported in
            guard total > exported else { return }
            counter.increment(by: total - exported)
            exported = total
        }
    }
}

/// Histogram bounds for the latencies these services measure: a Redis or NATS round trip (sub-millisecond on a LAN)
/// up to an RPC timeout (seconds).
public enum LatencyBuckets {
    public static let `default`: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10),
    ]
}

extension ContinuousClock.Instant {
    /// Time since this instant, for latency histograms.
    public var elapsed: Duration { ContinuousClock.now - self }
}
