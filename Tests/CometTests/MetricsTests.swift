import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GoIMClient
import GoIMConfig
import NIOCore
import NIOPosix
import TestSupport
import Testing

@testable import Comet

extension CometSuite {
    @Suite("Metrics and health on the monitor port")
    struct MetricsTests {
        /// GET on the monitor port (status code and body).
        static func get(_ path: String, port: Int) async throws -> (status: Int, body: String) {
            let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
        }

        static func value(_ line: String, in text: String) -> Double? {
            for candidate in text.split(separator: "\n") where candidate.hasPrefix(line + " ") {
                return Double(candidate.dropFirst(line.count + 1))
            }
            return nil
        }

        @Test("/metrics counts connections by transport and state, pushes per RPC, deliveries by path and bytes; /ready and /health answer")
        func monitorPort() async throws {
            try await withComet(configure: { $0.monitor.addr = HostPort(host: "127.0.0.1", port: 0) }) { comet in
                let port = try await #require(comet.comet.monitor).port()
                let a = try await comet.client(auth: auth(mid: 1, key: "a", room: "live://1"))
                let b = try await comet.client(.webSocket(), auth: auth(mid: 2, key: "b", room: "live://1"))
                try await comet.broadcastRoom("live://1", body: "hello")
                #expect(try await a.receiveBodies() == ["hello"])
                #expect(try await b.receive().map { String(buffer: $0.packet.body) } == ["hello"])

                let (status, text) = try await Self.get("/metrics", port: port)
                #expect(status == 200)
                #expect(Self.value(#"goim_comet_connections{transport="tcp",state="authenticated"}"#, in: text) == 1, "\(text)")
                #expect(Self.value(#"goim_comet_connections{transport="websocket",state="authenticated"}"#, in: text) == 1)
                #expect(Self.value(#"goim_comet_rpc_pushes_total{rpc="BroadcastRoom"}"#, in: text) == 1)
                let direct = Self.value(#"goim_comet_deliveries_total{path="direct"}"#, in: text) ?? -1
                let nio = Self.value(#"goim_comet_deliveries_total{path="nio"}"#, in: text) ?? -1
                #expect(direct + nio == 2)
                #expect((Self.value("goim_comet_delivered_bytes_total", in: text) ?? 0) > 2 * 16)
                #expect(Self.value(#"goim_comet_auth_total{result="accepted"}"#, in: text) == 2)
                #expect(Self.value("goim_comet_rooms", in: text) == 1)
                #expect(Self.value(#"goim_comet_logic_call_duration_seconds_count{method="Connect"}"#, in: text) == 2)

                // A client closing moves it out of the gauges and into the closed count.
                await a.close()
                try await waitUntil("the close is counted") {
                    let text = try await Self.get("/metrics", port: port).body
                    return Self.value(#"goim_comet_connections{transport="tcp",state="authenticated"}"#, in: text) == 0
                        && Self.value("goim_comet_connections_closed_total", in: text) == 1
                }

                #expect(try await Self.get("/health", port: port) == (200, #"{"status":"ok"}"#))
                let ready = try await Self.get("/ready", port: port)
                // No RenewOnline yet in this harness (onlineInterval 1 h runs once at start): logic answered it.
                #expect(ready.body.contains(#""listeners":"ok","rpc":"ok""#), "\(ready.body)")
                #expect(try await Self.get("/nothing", port: port).status == 404)
            }
        }
    }
}
