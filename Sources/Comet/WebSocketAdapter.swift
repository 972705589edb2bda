import GoIMProtocol
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// A do-nothing outbound handler placed in front of NIO's `WebSocketFrameEncoder` after the upgrade. Writing through
/// its context sends ready-made frame bytes straight to the socket (or TLS), past the encoder, which the comet never
/// uses: every outbound frame is pre-encoded, and a pushed frame is encoded once for all recipients.
final class OutputGate: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
}

/// Turns client WebSocket frames into goim packets, one packet per message (goim's rule), for `ConnectionHandler`.
///
/// - Text and binary messages are treated alike; fragmented messages are reassembled (at most 100 fragments and
///   `maxMessageSize` bytes, as goim's read buffer bounded them).
/// - Each message goes through `WebSocketPacket.decode`, which also checks `packLen` against the real message length
///   (goim bug 6); bytes after the packet are ignored as goim does (bug 7).
/// - Ping is answered with a Pong at once (goim only buffered it until the next write: bug 8).
/// - Close is answered with a Close echoing the status code, then the connection is closed (goim closed without
///   replying; a deliberate difference, see docs/compatibility.md).
/// - Reserved bits, unknown opcodes and broken fragmentation close the connection, as in goim.
final class WebSocketAdapter: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = Packet

    enum Failure: Error, CustomStringConvertible {
        case reservedBitsSet
        case unexpectedContinuation
        case newMessageDuringFragmentedMessage
        case fragmentedControlFrame
        case messageTooLarge(Int, limit: Int)
        case tooManyFragments(Int)
        case unsupportedOpcode(UInt8)

        var description: String {
            switch self {
            case .reservedBitsSet: "frame with reserved bits set"
            case .unexpectedContinuation: "continuation frame without a message to continue"
            case .newMessageDuringFragmentedMessage: "new data frame before the fragmented message ended"
            case .fragmentedControlFrame: "fragmented control frame"
            case .messageTooLarge(let size, let limit): "message of \(size) bytes exceeds \(limit)"
            case .tooManyFragments(let count): "message in more than \(count) fragments"
            case .unsupportedOpcode(let code): "unsupported opcode \(code)"
            }
        }
    }

    static let maxFragments = 100

    let limits: PacketLimits
    let maxMessageSize: Int
    private var output: ChannelHandlerContext?
    private var message: ByteBuffer?
    private var fragments = 0
    private var closing = false

    init(limits: PacketLimits, maxMessageSize: Int) {
        self.limits = limits
        self.maxMessageSize = maxMessageSize
    }

    func handlerAdded(context: ChannelHandlerContext) {
        output = try? context.pipeline.syncOperations.context(handlerType: OutputGate.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        output = nil
        message = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        if frame.rsv1 || frame.rsv2 || frame.rsv3 {
            return fail(context, .reservedBitsSet)
        }
        switch frame.opcode {
        case .binary, .text:
            guard message == nil else { return fail(context, .newMessageDuringFragmentedMessage) }
            if frame.fin {
                deliver(context, frame.unmaskedData)
            } else {
                guard frame.length <= maxMessageSize else {
                    return fail(context, .messageTooLarge(frame.length, limit: maxMessageSize))
                }
                message = frame.unmaskedData
                fragments = 1
            }
        case .continuation:
            guard var buffer = message else { return fail(context, .unexpectedContinuation) }
            message = nil  // keep the buffer uniquely referenced while appending
            fragments += 1
            guard fragments <= Self.maxFragments else { return fail(context, .tooManyFragments(Self.maxFragments)) }
            guard buffer.readableBytes + frame.length <= maxMessageSize else {
                return fail(context, .messageTooLarge(buffer.readableBytes + frame.length, limit: maxMessageSize))
            }
            var payload = frame.unmaskedData
            buffer.writeBuffer(&payload)
            if frame.fin {
                fragments = 0
                deliver(context, buffer)
            } else {
                message = buffer
            }
        case .ping:
            guard frame.fin else { return fail(context, .fragmentedControlFrame) }
            writeControl(context, opcodeByte: 0x8A, payload: frame.unmaskedData, flushThen: nil)
        case .pong:
            break
        case .connectionClose:
            closing = true
            // First stop everything `ConnectionHandler` would write (pushes, replies, the auth reply), directly or
            // through NIO: after the Close frame below nothing else may be sent (RFC 6455 5.5.1).
            context.fireUserInboundEventTriggered(WebSocketCloseReceived())
            var payload = frame.unmaskedData
            var reply = context.channel.allocator.buffer(capacity: 2)
            if let code = payload.readInteger(as: UInt16.self) {
                reply.writeInteger(code)
            } else {
                reply.writeInteger(UInt16(1000))
            }
            // Closed through the channel (from the pipeline's tail), like every close: it passes ConnectionHandler.
            writeControl(context, opcodeByte: 0x88, payload: reply) { context.channel.close(promise: nil) }
        default:
            fail(context, .unsupportedOpcode(UInt8(webSocketOpcode: frame.opcode)))
        }
    }

    private func deliver(_ context: ChannelHandlerContext, _ message: ByteBuffer) {
        do {
            let packet = try WebSocketPacket.decode(message, limits: limits)
            context.fireChannelRead(wrapInboundOut(packet))
        } catch {
            context.fireErrorCaught(error)
        }
    }

    private func fail(_ context: ChannelHandlerContext, _ failure: Failure) {
        closing = true
        message = nil
        context.fireErrorCaught(failure)
    }

    private func writeControl(
        _ context: ChannelHandlerContext, opcodeByte: UInt8, payload: ByteBuffer, flushThen: (() -> Void)?
    ) {
        guard let output else { return }
        context.fireUserInboundEventTriggered(NIOOutboundActivity())
        var frame = context.channel.allocator.buffer(capacity: 2 + payload.readableBytes)
        Wire.writeFrameHeader(firstByte: opcodeByte, payload: payload.readableBytes, to: &frame)
        frame.writeImmutableBuffer(payload)
        if let flushThen {
            let promise = context.eventLoop.makePromise(of: Void.self)
            output.writeAndFlush(NIOAny(frame), promise: promise)
            promise.futureResult.assumeIsolated().whenComplete { _ in flushThen() }
        } else {
            output.writeAndFlush(NIOAny(frame), promise: nil)
        }
    }
}

/// Sent inbound by `WebSocketAdapter` when the client's Close frame arrives, before the echoing Close is written.
struct WebSocketCloseReceived: Sendable {}

/// goim accepts exactly `GET /sub`; we also accept a query string (`/sub?token=...`), which goim refused
/// (a deliberate difference, see docs/compatibility.md).
enum WebSocketPath {
    static func accepts(_ head: HTTPRequestHead) -> Bool {
        guard head.method == .GET else { return false }
        let uri = head.uri
        return uri == "/sub" || uri.hasPrefix("/sub?")
    }
}
