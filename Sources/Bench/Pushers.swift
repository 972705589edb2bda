import Foundation
import GoIMProtocol
import GoIMRPC
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOHTTP1
import NIOPosix

/// Builds goim's push envelope: op 9 whose body is `packets` inner packets (op `operation`, stamped bodies). With
/// `firstOffset` the inner packets carry offsets from there in their `seq`, as job sends a room with history.
func stampedEnvelope(operation: Int32, bodySize: Int, packets: Int, firstOffset: Int32? = nil) -> Goim_Protocol_Proto {
    var inner = ByteBuffer()
    let now = wallNanoseconds()
    for index in 0..<max(1, packets) {
        inner.writePacket(Packet(
            operation: Operation(rawValue: operation), sequence: firstOffset.map { $0 + Int32(index) } ?? 0,
            body: ByteBuffer(bytes: Stamp.body(size: bodySize, at: now))))
    }
    return Goim_Protocol_Proto(operation: 9, body: Array(inner.readableBytesView))
}

/// Calls comet's gRPC `BroadcastRoom` directly, as goim's job does.
struct CometPusher {
    let host: String
    let port: Int

    /// Runs `rounds` BroadcastRoom calls paced at `rate` per second; returns the number that succeeded.
    /// With `historyEpoch` each call is what job sends for a room with history (offsets, epoch).
    func broadcastRoom(room: String, operation: Int32, bodySize: Int, packets: Int, rate: Double, rounds: Int,
                       historyEpoch: String? = nil, progress: @escaping @Sendable (Int) -> Void) async throws -> Int {
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            let comet = Goim_Comet_Comet.Client(wrapping: client)
            let start = ContinuousClock.now
            var ok = 0
            for round in 0..<rounds {
                let due = start + .seconds(Double(round) / rate)
                if due > .now { try await Task.sleep(until: due) }
                var request = Goim_Comet_BroadcastRoomReq()
                request.roomID = room
                request.proto = stampedEnvelope(
                    operation: operation, bodySize: bodySize, packets: packets,
                    firstOffset: historyEpoch.map { _ in Int32(round * max(1, packets) + 1) })
                request.historyEpoch = historyEpoch ?? ""
                do {
                    _ = try await comet.broadcastRoom(request)
                    ok += 1
                } catch {
                    FileHandle.standardError.write(Data("BroadcastRoom failed: \(error)\n".utf8))
                }
                progress(round + 1)
            }
            return ok
        }
    }
}

/// A minimal keep-alive HTTP/1.1 client for driving logic's push API and reading its history (one request in flight per connection).
final class HTTPPoster: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<ResponseHandler>
    let host: String
    /// Sent as `Authorization: Bearer <token>` (logic's `httpServer.pushToken`) when not empty.
    let token: String

    private init(channel: any Channel, handler: NIOLoopBound<ResponseHandler>, host: String, token: String) {
        self.channel = channel
        self.handler = handler
        self.host = host
        self.token = token
    }

    static func connect(
        host: String, port: Int, group: any EventLoopGroup,
        token: String = ProcessInfo.processInfo.environment["GOIM_PUSH_TOKEN"] ?? ""
    ) async throws -> HTTPPoster {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.pipeline.addHTTPClientHandlers().flatMap { channel.pipeline.addHandler(ResponseHandler()) }
            }
            .connect(host: host, port: port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ResponseHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return HTTPPoster(channel: channel, handler: handler, host: "\(host):\(port)", token: token)
    }

    /// POSTs `body` to `path` (with query); returns status and body text.
    func post(_ path: String, body: [UInt8]) async throws -> (status: Int, body: String) {
        try await request(.POST, path, body: body)
    }

    /// GETs `path` (with query); returns status and body text.
    func get(_ path: String) async throws -> (status: Int, body: String) {
        try await request(.GET, path, body: nil)
    }

    private func request(_ method: HTTPMethod, _ path: String, body: [UInt8]?) async throws -> (status: Int, body: String) {
        let promise = channel.eventLoop.makePromise(of: (Int, String).self)
        let host = self.host
        let token = self.token
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.waiting.append(promise)
            var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
            head.headers.add(name: "Host", value: host)
            if let body {
                head.headers.add(name: "Content-Type", value: "application/octet-stream")
                head.headers.add(name: "Content-Length", value: "\(body.count)")
            }
            if !token.isEmpty { head.headers.add(name: "Authorization", value: "Bearer \(token)") }
            let context = handler.value.context!
            context.write(NIOAny(HTTPClientRequestPart.head(head)), promise: nil)
            if let body { context.write(NIOAny(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil) }
            context.writeAndFlush(NIOAny(HTTPClientRequestPart.end(nil)), promise: nil)
        }
        return try await promise.futureResult.get()
    }

    func close() async { try? await channel.close() }
}

private final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    var waiting: [EventLoopPromise<(Int, String)>] = []
    var context: ChannelHandlerContext?
    private var status = 0
    private var body = ByteBuffer()

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            body.clear()
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            if !waiting.isEmpty { waiting.removeFirst().succeed((status, String(buffer: body))) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        for promise in waiting { promise.fail(ChannelError.ioOnClosedChannel) }
        waiting.removeAll()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
