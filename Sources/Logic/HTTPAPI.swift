import Foundation
import GoIMRPC
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Primitives
import Registry
import Telemetry

/// The request context of the HTTP API: Hummingbird's core storage plus the peer address (for
/// `/goim/nodes/weighted`'s client IP).
public struct LogicRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: NIOCore.SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }
}

/// goim's v2 HTTP API (reference §4.6): the routes, query parameters, raw body and JSON envelope
/// `{"code":0,"message":""[,"data":...]}`, plus `GET /health`, `/ready` and `/metrics`. Routing is a plain switch over fixed paths,
/// and unknown paths or methods get gin's plain-text `404 page not found`.
public struct LogicHTTPResponder: HTTPResponder {
    public typealias Context = LogicRequestContext

    let core: LogicCore
    let maxBodySize: Int
    let pushToken: String
    /// `/metrics`, `/health` (liveness) and `/ready` (Redis, NATS).
    let monitor: MonitorRoutes
    let metrics: HTTPMetrics

    /// `httpServer.corsOrigins`, lower-cased: origins whose pages may read the replies, `*` for any.
    let corsOrigins: [String]
    /// Per-IP rate and in-flight cap; nil = none. `/health`, `/ready` and `/metrics` are never limited.
    let admission: HTTPAdmission?
    /// `/goim/history/room`; nil answers that no room keeps history.
    let history: LogicHistory?

    public init(
        core: LogicCore, maxBodySize: Int, pushToken: String, corsOrigins: [String] = [], admission: HTTPAdmission? = nil,
        history: LogicHistory? = nil, telemetry: Telemetry = Telemetry()
    ) {
        self.core = core
        self.history = history
        self.maxBodySize = maxBodySize
        self.pushToken = pushToken
        self.corsOrigins = corsOrigins.map { $0.lowercased() }
        self.admission = admission
        self.metrics = HTTPMetrics(telemetry: telemetry)
        self.monitor = MonitorRoutes(
            telemetry: telemetry,
            probes: [
                HealthProbe("redis") { await Self.probe { try await core.routing.ping() } },
                HealthProbe("nats") { await Self.probe { try await core.queue.ping() } },
            ])
    }

    private static func probe(_ body: () async throws -> Void) async -> String? {
        do {
            try await body()
            return nil
        } catch let error as LogicError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await respondMeasured(to: request, context: context)
        metrics.record(path: request.uri.path, status: response.status, duration: start.elapsed)
        return response
    }

    private func respondMeasured(to request: Request, context: Context) async throws -> Response {
        guard let admission, !MonitorRoutes.paths.contains(request.uri.path) else {
            return try await respondAdmitted(to: request, context: context)
        }
        if let refusal = admission.admit(context.remoteAddress) {
            var response = Self.tooManyRequests(refusal)
            if let origin = allowedOrigin(request) { response.headers[.accessControlAllowOrigin] = origin }
            return response
        }
        defer { admission.finish() }
        return try await respondAdmitted(to: request, context: context)
    }

    private func respondAdmitted(to request: Request, context: Context) async throws -> Response {
        guard let origin = allowedOrigin(request) else { return try await route(request, context: context) }
        if request.method == .options, let method = Self.routes[request.uri.path] {
            return Self.preflight(origin: origin, method: method)
        }
        var response = try await route(request, context: context)
        response.headers[.accessControlAllowOrigin] = origin
        if origin != "*" { response.headers[.vary] = "Origin" }
        return response
    }

    private func route(_ request: Request, context: Context) async throws -> Response {
        let path = request.uri.path
        let method = request.method
        do {
            switch (method, path) {
            case (.post, "/goim/push/keys"): return try await pushKeys(request)
            case (.post, "/goim/push/mids"): return try await pushMids(request)
            case (.post, "/goim/push/room"): return try await pushRoom(request)
            case (.post, "/goim/push/all"): return try await pushAll(request)
            case (.get, "/goim/online/top"): return try onlineTop(request)
            case (.get, "/goim/online/room"): return try onlineRoom(request)
            case (.get, "/goim/online/total"): return onlineTotal()
            case (.get, "/goim/nodes/weighted"): return nodesWeighted(request, context: context)
            case (.get, "/goim/nodes/instances"): return nodesInstances()
            case (.get, "/goim/history/room"): return try await historyRoom(request)
            case (.get, "/goim/history/mid"): return try await historyMid(request)
            case (.get, "/admin"): return AdminPage.response()
            case (.get, "/goim/admin/summary"): return try adminSummary(request)
            case (.get, "/health"), (.get, "/ready"), (.get, "/metrics"): return await monitor.respond(path: path) ?? Self.notFound()
            default: return Self.notFound()
            }
        } catch let error as LogicError {
            if error.code == -500 {
                context.logger.warning("request failed", metadata: ["goim.path": "\(path)", "error": "\(error.message)"])
            }
            return Self.failure(error)
        }
    }

    // MARK: - CORS

    /// Each route's method, for CORS preflight requests (the `switch` in `route` is the router).
    static let routes: [String: HTTPRequest.Method] = [
        "/goim/push/keys": .post, "/goim/push/mids": .post, "/goim/push/room": .post, "/goim/push/all": .post,
        "/goim/online/top": .get, "/goim/online/room": .get, "/goim/online/total": .get,
        "/goim/nodes/weighted": .get, "/goim/nodes/instances": .get, "/goim/history/room": .get, "/goim/history/mid": .get, "/health": .get,
        "/ready": .get, "/metrics": .get, "/admin": .get, "/goim/admin/summary": .get,
    ]

    /// The `Access-Control-Allow-Origin` value for this request: `*` when any origin is allowed, the request's
    /// `Origin` when it is listed, nil (no CORS headers at all, as goim) otherwise.
    private func allowedOrigin(_ request: Request) -> String? {
        guard !corsOrigins.isEmpty, let origin = request.headers[.origin] else { return nil }
        if corsOrigins.contains("*") { return "*" }
        return corsOrigins.contains(origin.lowercased()) ? origin : nil
    }

    /// The answer to a browser's `OPTIONS` preflight (sent before a push with `Authorization` or a JSON body).
    static func preflight(origin: String, method: HTTPRequest.Method) -> Response {
        var headers: HTTPFields = [
            .accessControlAllowOrigin: origin,
            .accessControlAllowMethods: "\(method.rawValue), OPTIONS",
            .accessControlAllowHeaders: "Authorization, Content-Type",
            .accessControlMaxAge: "600",
            .contentLength: "0",
        ]
        if origin != "*" { headers[.vary] = "Origin" }
        return Response(status: .noContent, headers: headers)
    }

    // MARK: - Push routes

    /// The caller's `Idempotency-Key` header: a retried push with the same key is delivered once (within
    /// `nats.duplicateWindow`). At most 200 printable ASCII characters.
    static func idempotencyKey(_ request: Request) throws -> String? {
        guard let value = request.headers[Self.idempotencyKeyField] else { return nil }
        guard !value.isEmpty, value.utf8.count <= 200, value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw LogicError.badParameter(
                parameter: "Idempotency-Key", reason: "1 to 200 printable ASCII characters without spaces")
        }
        return value
    }

    static let idempotencyKeyField = HTTPField.Name("Idempotency-Key")!

    private func pushKeys(_ request: Request) async throws -> Response {
        try authorize(request)
        let query = QueryParameters(request.uri.query)
        let operation = try query.int32("operation", required: false)
        let keys = query.list("keys")
        guard !keys.isEmpty else { throw LogicError.badParameter(parameter: "keys", reason: "at least one key is required") }
        let message = try await body(request)
        try await core.pushKeys(operation: operation, keys: keys, message: message, idempotencyKey: try Self.idempotencyKey(request))
        return Self.success(nil)
    }

    private func pushMids(_ request: Request) async throws -> Response {
        try authorize(request)
        let query = QueryParameters(request.uri.query)
        let operation = try query.int32("operation", required: false)
        let mids = try query.list("mids").map { text -> Int64 in
            guard let mid = Int64(text) else {
                throw LogicError.badParameter(parameter: "mids", reason: "\(Self.quoted(text)) is not an int64")
            }
            return mid
        }
        guard !mids.isEmpty else { throw LogicError.badParameter(parameter: "mids", reason: "at least one mid is required") }
        let message = try await body(request)
        try await core.pushMids(operation: operation, mids: mids, message: message, idempotencyKey: try Self.idempotencyKey(request))
        return Self.success(nil)
    }

    private func pushRoom(_ request: Request) async throws -> Response {
        try authorize(request)
        let query = QueryParameters(request.uri.query)
        let operation = try query.int32("operation", required: true)
        let type = try query.string("type", required: true)
        let room = try query.string("room", required: true)
        let message = try await body(request)
        try await core.pushRoom(operation: operation, type: type, room: room, message: message, idempotencyKey: try Self.idempotencyKey(request))
        return Self.success(nil)
    }

    private func pushAll(_ request: Request) async throws -> Response {
        try authorize(request)
        let query = QueryParameters(request.uri.query)
        let operation = try query.int32("operation", required: true)
        let speed = try query.int32("speed", required: false)
        guard speed >= 0 else { throw LogicError.badParameter(parameter: "speed", reason: "must not be negative") }
        let message = try await body(request)
        try await core.pushAll(operation: operation, speed: speed, message: message, idempotencyKey: try Self.idempotencyKey(request))
        return Self.success(nil)
    }

    /// `Authorization: Bearer <httpServer.pushToken>` when a token is configured.
    private func authorize(_ request: Request) throws {
        guard !pushToken.isEmpty else { return }
        guard let header = request.headers[.authorization] else {
            throw LogicError.unauthorized("authorization: the push API requires \"Authorization: Bearer <token>\"")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer",
            ConstantTime.equals(parts[1].trimmingCharacters(in: .whitespaces), pushToken)
        else {
            throw LogicError.unauthorized("authorization: the bearer token is not valid")
        }
    }

    /// The raw body, at most `maxBodySize` bytes.
    private func body(_ request: Request) async throws -> Data {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBodySize {
            throw LogicError.bodyTooLarge(limit: maxBodySize)
        }
        var buffer = ByteBuffer()
        do {
            for try await chunk in request.body {
                guard buffer.readableBytes + chunk.readableBytes <= maxBodySize else {
                    throw LogicError.bodyTooLarge(limit: maxBodySize)
                }
                var chunk = chunk
                buffer.writeBuffer(&chunk)
            }
        } catch let error as LogicError {
            throw error
        } catch {
            throw LogicError.bodyUnreadable("\(error)")
        }
        return Data(buffer.readableBytesView)
    }

    // MARK: - History

    /// `GET /goim/history/room?type=&room=&since=&epoch=&limit=` (swift-goim; push token applies): the room's messages
    /// after offset `since`, oldest first. Bodies are base64 (they are arbitrary bytes).
    private func historyRoom(_ request: Request) async throws -> Response {
        try authorize(request)
        let query = QueryParameters(request.uri.query)
        let type = try query.string("type", required: true)
        let room = try query.string("room", required: true)
        let (since, epoch, limit) = try Self.historyRange(query)
        guard let history else {
            throw LogicError.badParameter(parameter: "type", reason: "no room type keeps history ([history.rooms] is empty)")
        }
        let reply = try await history.room(LogicCore.roomKey(type: type, room: room), since: since, epoch: epoch, limit: limit)
        guard reply.enabled else {
            throw LogicError.badParameter(parameter: "type", reason: "rooms of type \(Self.quoted(type)) keep no history ([history.rooms])")
        }
        return Self.historyPage(reply)
    }

    /// `GET /goim/history/mid?mid=&since=&epoch=&limit=` (swift-goim; push token applies): the pushes addressed to user
    /// `mid` after offset `since` (its offline messages), when `[history] mids` is set.
    private func historyMid(_ request: Request) async throws -> Response {
        try authorize(request)
        let query = QueryParameters(request.uri.query)
        let text = try query.string("mid", required: true)
        guard let mid = Int64(text) else {
            throw LogicError.badParameter(parameter: "mid", reason: "\(Self.quoted(text)) is not an int64")
        }
        let (since, epoch, limit) = try Self.historyRange(query)
        guard let history, history.policy.mids != nil else {
            throw LogicError.badParameter(parameter: "mid", reason: "users keep no history ([history] mids is not set)")
        }
        return Self.historyPage(try await history.mid(mid, since: since, epoch: epoch, limit: limit))
    }

    /// `since` (default 0), `epoch` (default: the current one) and `limit` (default 100) of a history route.
    private static func historyRange(_ query: QueryParameters) throws -> (since: UInt64, epoch: String, limit: Int) {
        let sinceText = query.first("since") ?? ""
        guard let since = sinceText.isEmpty ? 0 : UInt64(sinceText) else {
            throw LogicError.badParameter(parameter: "since", reason: "\(Self.quoted(sinceText)) is not an offset (a non-negative integer)")
        }
        let limitText = query.first("limit") ?? ""
        guard let limit = limitText.isEmpty ? 100 : Int(limitText), limit >= 0 else {
            throw LogicError.badParameter(parameter: "limit", reason: "\(Self.quoted(limitText)) is not a non-negative integer")
        }
        return (since, query.first("epoch") ?? "", limit)
    }

    private static func historyPage(_ reply: Swiftgoim_Logic_HistoryReply) -> Response {
        let messages: [GoJSON] = reply.messages.map { message in
            .object([
                ("offset", .int(Int64(message.offset))), ("op", .int(Int64(message.op))),
                ("body", .string(message.body.base64EncodedString())),
            ])
        }
        return Self.success(.object([
            ("epoch", .string(reply.epoch)), ("top", .int(Int64(reply.top))), ("first", .int(Int64(reply.first))),
            ("complete", .bool(reply.complete)), ("messages", .array(messages)),
        ]))
    }

    // MARK: - Online and nodes

    private func onlineTop(_ request: Request) throws -> Response {
        let query = QueryParameters(request.uri.query)
        let type = try query.string("type", required: true)
        let limit = try query.int("limit", required: true)
        guard limit > 0 else { throw LogicError.badParameter(parameter: "limit", reason: "must be a positive integer") }
        let tops = core.onlineTop(type: type, limit: limit)
        return Self.success(.array(tops.map { .object([("room_id", .string($0.roomID)), ("count", .integer($0.count))]) }))
    }

    private func onlineRoom(_ request: Request) throws -> Response {
        let query = QueryParameters(request.uri.query)
        let type = try query.string("type", required: true)
        let rooms = query.list("rooms")
        guard !rooms.isEmpty else { throw LogicError.badParameter(parameter: "rooms", reason: "at least one room is required") }
        let counts = core.onlineRoom(type: type, rooms: rooms)
        return Self.success(.map(counts.mapValues { .integer($0) }))
    }

    /// What the admin page shows (behind the push token): the comets with their counts, online totals, the busiest
    /// rooms, and cumulative counts the page turns into rates (push requests this logic answered, deliveries of every
    /// comet as of its last registry refresh).
    private func adminSummary(_ request: Request) throws -> Response {
        try authorize(request)
        let instances = core.cluster.instances.sorted { $0.hostname < $1.hostname }
        let rooms = core.cluster.roomCount.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(10)
        let totals = core.cluster.totals
        let nodes: [GoJSON] = instances.map { instance in
            .object([
                ("hostname", .string(instance.hostname)), ("addrs", .array(instance.addrs.map { .string($0) })),
                ("tcp_ports", .array(instance.tcpPorts.map { .integer($0) })), ("ws_ports", .array(instance.wsPorts.map { .integer($0) })),
                ("conn_count", .integer(instance.connCount)), ("ip_count", .integer(instance.ipCount)),
                ("delivered", .integer(instance.delivered ?? 0)), ("offline", .bool(instance.offline)),
                ("started_at", .integer(instance.startedAt)), ("latest_timestamp", .integer(instance.updatedAt)),
            ])
        }
        return Self.success(.object([
            ("nodes", .array(nodes)),
            ("online", .object([
                ("conn_count", .integer(totals.connCount)), ("ip_count", .integer(totals.ipCount)),
                ("rooms", .integer(core.cluster.roomCount.count)),
            ])),
            ("top_rooms", .array(rooms.map { .object([("room_id", .string($0.key)), ("count", .integer($0.value))]) })),
            ("push_requests", .object(metrics.pushRequests.map { ($0.key, .integer($0.value)) }.sorted { $0.0 < $1.0 })),
            ("delivered", .integer(instances.reduce(0) { $0 + ($1.delivered ?? 0) })),
        ]))
    }

    private func onlineTotal() -> Response {
        let totals = core.cluster.totals
        return Self.success(.map(["conn_count": .integer(totals.connCount), "ip_count": .integer(totals.ipCount)]))
    }

    private func nodesWeighted(_ request: Request, context: Context) -> Response {
        let query = QueryParameters(request.uri.query)
        let platform = query.first("platform") ?? ""
        let reply = core.cluster.nodes(platform: platform, clientIP: Self.clientIP(request, context: context))
        return Self.success(Self.json(reply))
    }

    private func nodesInstances() -> Response {
        let instances = core.cluster.onlineInstances
        guard !instances.isEmpty else { return Self.success(.null) }
        return Self.success(.array(instances.map(Self.discoveryJSON)))
    }

    /// gin's `ClientIP()`: the first `X-Forwarded-For` entry, `X-Real-Ip`, or the peer address.
    static func clientIP(_ request: Request, context: Context) -> String {
        if let forwarded = request.headers[HTTPField.Name("X-Forwarded-For")!]?.split(separator: ",").first {
            let ip = forwarded.trimmingCharacters(in: .whitespaces)
            if !ip.isEmpty { return ip }
        }
        if let real = request.headers[HTTPField.Name("X-Real-Ip")!]?.trimmingCharacters(in: .whitespaces), !real.isEmpty {
            return real
        }
        return context.remoteAddress?.ipAddress ?? ""
    }

    // MARK: - JSON

    /// `NodesReply` as goim's JSON: field order, zero and empty fields omitted.
    static func json(_ reply: Goim_Logic_NodesReply) -> GoJSON {
        var entries: [(String, GoJSON)] = []
        if !reply.domain.isEmpty { entries.append(("domain", .string(reply.domain))) }
        if reply.tcpPort != 0 { entries.append(("tcp_port", .integer(reply.tcpPort))) }
        if reply.wsPort != 0 { entries.append(("ws_port", .integer(reply.wsPort))) }
        if reply.wssPort != 0 { entries.append(("wss_port", .integer(reply.wssPort))) }
        if reply.heartbeat != 0 { entries.append(("heartbeat", .integer(reply.heartbeat))) }
        if !reply.nodes.isEmpty { entries.append(("nodes", .array(reply.nodes.map { .string($0) }))) }
        if reply.hasBackoff {
            var backoff: [(String, GoJSON)] = []
            if reply.backoff.maxDelay != 0 { backoff.append(("max_delay", .integer(reply.backoff.maxDelay))) }
            if reply.backoff.baseDelay != 0 { backoff.append(("base_delay", .integer(reply.backoff.baseDelay))) }
            if reply.backoff.factor != 0 { backoff.append(("factor", .float32(reply.backoff.factor))) }
            if reply.backoff.jitter != 0 { backoff.append(("jitter", .float32(reply.backoff.jitter))) }
            entries.append(("backoff", .object(backoff)))
        }
        if reply.heartbeatMax != 0 { entries.append(("heartbeat_max", .integer(reply.heartbeatMax))) }
        return .object(entries)
    }

    /// A registry record in the shape of goim's Discovery instance (`naming.Instance`).
    static func discoveryJSON(_ instance: CometInstance) -> GoJSON {
        .object([
            ("region", .string(instance.region)),
            ("zone", .string(instance.zone)),
            ("env", .string("")),
            ("appid", .string("goim.comet")),
            ("hostname", .string(instance.hostname)),
            ("addrs", .array(instance.rpcAddress.isEmpty ? [] : [.string("grpc://\(instance.rpcAddress)")])),
            ("version", .string("")),
            ("latest_timestamp", .integer(instance.updatedAt)),
            (
                "metadata",
                .map([
                    "addrs": .string(instance.addrs.joined(separator: ",")),
                    "conn_count": .string(String(instance.connCount)),
                    "ip_count": .string(String(instance.ipCount)),
                    "offline": .string(String(instance.offline)),
                    "weight": .string(String(instance.weight)),
                ])
            ),
        ])
    }

    // MARK: - Responses

    static func envelope(code: Int, message: String, data: GoJSON?) -> GoJSON {
        var entries: [(String, GoJSON)] = [("code", .integer(code)), ("message", .string(message))]
        if let data { entries.append(("data", data)) }
        return .object(entries)
    }

    static func success(_ data: GoJSON?) -> Response {
        json(envelope(code: 0, message: "", data: data), status: .ok)
    }

    /// -400 and -401 carry their HTTP status; -500 is sent with 200, as goim does.
    static func failure(_ error: LogicError) -> Response {
        if case .queueOverloaded = error {
            // Not a goim condition: HTTP 503 and Retry-After tell callers to back off (goim's -500 code is kept).
            var response = json(envelope(code: error.code, message: error.message, data: nil), status: .serviceUnavailable)
            response.headers[.retryAfter] = "1"
            return response
        }
        let status: HTTPResponse.Status =
            switch error.code {
            case -400: .badRequest
            case -401: .unauthorized
            default: .ok
            }
        return json(envelope(code: error.code, message: error.message, data: nil), status: status)
    }

    /// HTTP 429 in goim's envelope, code -429; `Retry-After` when the per-IP rate was the reason.
    static func tooManyRequests(_ refusal: HTTPAdmission.Refusal) -> Response {
        var response = json(envelope(code: -429, message: refusal.message, data: nil), status: .tooManyRequests)
        if case .rate(let seconds) = refusal { response.headers[.retryAfter] = String(seconds) }
        return response
    }

    static func json(_ value: GoJSON, status: HTTPResponse.Status) -> Response {
        let text = value.encoded()
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .contentLength: String(text.utf8.count)],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func notFound() -> Response {
        Response(
            status: .notFound, headers: [.contentType: "text/plain", .contentLength: "18"],
            body: .init(byteBuffer: ByteBuffer(string: "404 page not found")))
    }

    static func quoted(_ text: String) -> String { GoJSON.string(text).encoded() }
}

extension QueryParameters {
    /// A string parameter; `required` means present and non-empty (gin's `binding:"required"`).
    func string(_ name: String, required: Bool) throws -> String {
        let value = first(name) ?? ""
        if required && value.isEmpty {
            throw LogicError.badParameter(parameter: name, reason: "required parameter is missing or empty")
        }
        return value
    }

    /// An int32 parameter; empty means 0 (as gin); `required` means non-zero (gin's `binding:"required"`).
    func int32(_ name: String, required: Bool) throws -> Int32 {
        let value = try integer(name, required: required, as: Int32.self)
        return value
    }

    func int(_ name: String, required: Bool) throws -> Int {
        try integer(name, required: required, as: Int.self)
    }

    private func integer<I: FixedWidthInteger>(_ name: String, required: Bool, as type: I.Type) throws -> I {
        let text = first(name) ?? ""
        let value: I
        if text.isEmpty {
            value = 0
        } else if let parsed = I(text) {
            value = parsed
        } else {
            let kind = I.self == Int32.self ? "int32" : "integer"
            throw LogicError.badParameter(parameter: name, reason: "\(LogicHTTPResponder.quoted(text)) is not a valid \(kind)")
        }
        if required && value == 0 {
            throw LogicError.badParameter(
                parameter: name, reason: text.isEmpty ? "required parameter is missing" : "required, must not be 0")
        }
        return value
    }
}
