import Testing

@testable import Telemetry

@Suite("Telemetry: registry, mirrors, health reports, monitoring routes")
struct TelemetryTests {
    @Test("a mirror follows a total kept elsewhere and never goes back")
    func mirror() async {
        let telemetry = Telemetry()
        let mirror = telemetry.mirror("goim_test_things_total", "Things.")
        let total = TotalBox()
        telemetry.collect { mirror.update(to: total.value) }
        total.value = 5
        #expect(await telemetry.scrape().contains("goim_test_things_total 5\n"))
        total.value = 3  // a total never goes down; if it ever did, the counter stays
        #expect(await telemetry.scrape().contains("goim_test_things_total 5\n"))
        total.value = 12
        let text = await telemetry.scrape()
        #expect(text.contains("# TYPE goim_test_things_total counter"))
        #expect(text.contains("# HELP goim_test_things_total Things."))
        #expect(text.contains("goim_test_things_total 12\n"))
    }

    @Test("latency histograms are in seconds with the default bounds")
    func latency() async {
        let telemetry = Telemetry()
        telemetry.latency("goim_test_call_duration_seconds", "Calls.", labels: [("method", "Connect")]).record(.milliseconds(3))
        let text = await telemetry.scrape()
        #expect(text.contains(#"goim_test_call_duration_seconds_bucket{method="Connect",le="0.005"} 1"#), "\(text)")
        #expect(text.contains(#"goim_test_call_duration_seconds_bucket{method="Connect",le="0.002"} 0"#))
        #expect(text.contains(#"goim_test_call_duration_seconds_count{method="Connect"} 1"#))
    }

    @Test("a readiness report runs probes concurrently, bounds each by the timeout, and says what is wrong in JSON")
    func report() async {
        let clock = ContinuousClock()
        let start = clock.now
        let report = await HealthReport.run(
            [
                HealthProbe("redis") { nil },
                HealthProbe.roundTrip("nats") { throw ProbeError() },
                HealthProbe("slow") {
                    try? await Task.sleep(for: .seconds(30))
                    return nil
                },
                HealthProbe("quote") { "a \"quoted\"\nline" },
            ], timeout: .milliseconds(200))
        #expect(clock.now - start < .seconds(5))
        #expect(!report.ready)
        #expect(
            report.json
                == #"{"status":"unavailable","redis":"ok","nats":"no route to NATS","slow":"no answer within 0.2 seconds","quote":"a \"quoted\"\nline"}"#)
        #expect(await HealthReport.run([HealthProbe("redis") { nil }]).json == #"{"status":"ok","redis":"ok"}"#)
    }

    @Test("the monitoring routes: /metrics as Prometheus text, /health, /ready (503 when a probe fails), nothing else")
    func routes() async throws {
        let telemetry = Telemetry()
        telemetry.counter("goim_test_requests_total", "Requests.").increment()
        let routes = MonitorRoutes(telemetry: telemetry, probes: [HealthProbe("nats") { "not connected" }])
        let metrics = try #require(await routes.respond(path: "/metrics"))
        #expect(metrics.status == .ok)
        #expect(metrics.headers[.contentType] == Telemetry.contentType)
        #expect(try #require(await routes.respond(path: "/health")).status == .ok)
        #expect(try #require(await routes.respond(path: "/ready")).status == .serviceUnavailable)
        #expect(await routes.respond(path: "/admin") == nil)
    }
}

private struct ProbeError: Error, CustomStringConvertible {
    var description: String { "no route to NATS" }
}

/// A total owned by the test, read by a collector.
private final class TotalBox: @unchecked Sendable {
    // @unchecked Sendable: written by the test between scrapes and read by the collector during them, never at once.
    var value = 0
}
