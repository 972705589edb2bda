import Foundation
import StackHarness
import Testing

/// `/metrics`, `/health` and `/ready` on every service of a running stack, and the Grafana dashboard and Prometheus
/// configuration shipped in docker/ checked against what the services really export.
@Suite("stack: metrics, health and the dashboard", .serialized, .startsServers)
struct MonitoringTests {
    static func repositoryPath(_ relative: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(relative).path
    }

    /// Metric family names of a Prometheus text exposition (its `# TYPE` lines).
    static func families(_ text: String) -> Set<String> {
        Set(text.split(separator: "\n").compactMap { line in
            line.hasPrefix("# TYPE ") ? line.split(separator: " ")[2].description : nil
        })
    }

    /// Every `goim_*` metric an expression of the dashboard names, histogram series reduced to their family.
    static func dashboardMetrics() throws -> [String: [String]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("docker/grafana/dashboards/swift-goim.json")))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        let name = try Regex("goim_[a-z0-9_]+")
        var found: [String: [String]] = [:]
        for panel in panels {
            for target in panel["targets"] as? [[String: Any]] ?? [] {
                let expression = try #require(target["expr"] as? String)
                for match in expression.matches(of: name) {
                    var metric = String(expression[match.range])
                    for suffix in ["_bucket", "_sum", "_count"] where metric.hasSuffix(suffix) {
                        metric.removeLast(suffix.count)
                    }
                    found[metric, default: []].append(panel["title"] as? String ?? "?")
                }
            }
        }
        return found
    }

    @Test("every service serves /metrics, /health and /ready; every metric the dashboard uses is exported")
    func dashboardMatchesTheServices() async throws {
        try await Stack.run { stack in
            let comet = stack.comets[0]
            let member = try await Member.connect("tcp", to: comet, webSocket: false, mid: 7, room: "live://1", accepts: [1000])
            defer { Task { await member.close() } }
            try await stack.push("/goim/push/room?operation=1000&type=live&room=1", "to-room")
            try await stack.push("/goim/push/mids?operation=1000&mids=7", "to-mid")
            try await stack.push("/goim/push/all?operation=1000", "to-all")
            for body in ["to-room", "to-mid", "to-all"] { try await member.receive(body) }

            let ports = [("logic", stack.logics[0].httpPort), ("comet", comet.monitorPort), ("job", stack.jobMonitorPorts[0])]
            var exported: Set<String> = []
            for (service, port) in ports {
                let health = try await Stack.get("/health", port: port)
                #expect(health.status == 200 && health.body == #"{"status":"ok"}"#, "\(service) /health: \(health.body)")
                try await eventually("\(service) ready") { try await Stack.get("/ready", port: port).status == 200 }
                let metrics = try await Stack.get("/metrics", port: port)
                #expect(metrics.status == 200)
                #expect(metrics.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
                let families = Self.families(metrics.body)
                #expect(families.allSatisfy { $0.hasPrefix("goim_\(service)_") }, "\(service) exports \(families.sorted())")
                exported.formUnion(families)
                if service == "comet" {
                    #expect(metrics.body.contains(#"goim_comet_rpc_pushes_total{rpc="BroadcastRoom"} 1"#), "\(metrics.body)")
                    #expect(metrics.body.contains(#"goim_comet_rpc_pushes_total{rpc="PushMsg"} 1"#))
                    #expect(metrics.body.contains(#"goim_comet_rpc_pushes_total{rpc="Broadcast"} 1"#))
                }
                if service == "job" {
                    #expect(metrics.body.contains(#"goim_job_messages_finished_total{outcome="delivered"} 3"#), "\(metrics.body)")
                    #expect(metrics.body.contains("goim_job_consumer_pending_messages 0"))
                }
            }

            let used = try Self.dashboardMetrics()
            #expect(used.count >= 20)
            let missing = used.keys.filter { !exported.contains($0) }.sorted()
            #expect(missing.isEmpty, "the dashboard uses metrics no service exports: \(missing.map { "\($0) (\(used[$0]!.joined(separator: ", ")))" })")
        }
    }

    @Test("docker/prometheus scrapes the ports the shipped configurations serve metrics on")
    func prometheusTargets() throws {
        let text = try String(contentsOfFile: Self.repositoryPath("docker/prometheus/prometheus.yml"), encoding: .utf8)
        for (name, port) in [("logic", 3111), ("comet", 3108), ("job", 3128)] {
            #expect(text.contains("names: [\(name)]\n        type: A\n        port: \(port)"), "\(name) on \(port)")
        }
    }
}
