import Hummingbird
import Logging
import NIOCore
import Primitives
import ServiceLifecycle

/// The three monitoring routes, for any HTTP server: `GET /metrics` (Prometheus text), `GET /health` (liveness: the
/// process answers) and `GET /ready` (readiness: every probe passes; 503 with what is wrong otherwise).
public struct MonitorRoutes: Sendable {
    public let telemetry: Telemetry
    public let probes: [HealthProbe]

    public init(telemetry: Telemetry, probes: [HealthProbe]) {
        self.telemetry = telemetry
        self.probes = probes
    }

    public static let paths: Set<String> = ["/metrics", "/health", "/ready"]

    /// The answer for `path`, or nil when it is not one of the monitoring routes.
    public func respond(path: String) async -> Response? {
        switch path {
        case "/metrics":
            return Self.text(await telemetry.scrape(), contentType: Telemetry.contentType, status: .ok)
        case "/health":
            return Self.text(HealthReport.aliveJSON, contentType: "application/json; charset=utf-8", status: .ok)
        case "/ready":
            let report = await HealthReport.run(probes)
            return Self.text(report.json, contentType: "application/json; charset=utf-8", status: report.ready ? .ok : .serviceUnavailable)
        default:
            return nil
        }
    }

    static func text(_ text: String, contentType: String, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [.contentType: contentType, .contentLength: String(text.utf8.count)],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// The small HTTP port of comet and job (`[monitor] addr`, docs/operations.md) serving `MonitorRoutes`; anything else
/// is a 404. Read-only: no ids, no payloads, nothing that changes state.
public final class MonitorServer: Service {
    struct Responder: HTTPResponder {
        typealias Context = BasicRequestContext
        let routes: MonitorRoutes

        func respond(to request: Request, context: Context) async throws -> Response {
            guard request.method == .get || request.method == .head, let response = await routes.respond(path: request.uri.path) else {
                return MonitorRoutes.text("404 page not found", contentType: "text/plain", status: .notFound)
            }
            return response
        }
    }

    private let application: Application<Responder>
    private let bound: OnceValue<Int>

    public init(host: String, port: Int, routes: MonitorRoutes, logger: Logger) {
        let bound = OnceValue<Int>()
        self.bound = bound
        application = Application(
            responder: Responder(routes: routes),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                bound.publish(port)
                logger.info("monitor port listening (/metrics, /health, /ready)", metadata: ["goim.port": "\(port)"])
            },
            logger: logger)
    }

    public func run() async throws {
        do {
            try await application.run()
        } catch {
            bound.fail(error)
            throw error
        }
    }

    /// The port once listening (the configured one, or the one chosen for port 0).
    public func port() async throws -> Int { try await bound.value() }
}
