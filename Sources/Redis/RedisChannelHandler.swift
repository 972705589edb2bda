import Logging
import NIOCore

/// What a connection writes into its channel: commands sent in one write, answered as one array of replies.
struct RedisRequest: Sendable {
    var commands: [RedisCommand]
    var promise: EventLoopPromise<[RESPValue]>
    /// nil means wait for ever.
    var timeout: TimeAmount?
}

/// Encodes requests, decodes replies and matches them to requests in order (Redis answers in order).
/// Many requests may be in flight; each carries its own timeout. Any failure of the stream (timeout, bad bytes,
/// close) fails every request still waiting and closes the channel, since later replies could not be matched.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct InFlight {
        var id: UInt64
        var promise: EventLoopPromise<[RESPValue]>
        var expected: Int
        var label: String
        var timeout: Scheduled<Void>?
    }

    private let reader = RESPReader()
    private let logger: Logger
    private var inFlight = CircularBuffer<InFlight>()
    /// Replies collected so far for the oldest request in flight.
    private var headReplies: [RESPValue] = []
    private var nextID: UInt64 = 0
    /// Set once the stream is unusable; later writes fail at once.
    private var isClosed = false
    private var context: ChannelHandlerContext?

    init(logger: Logger) {
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        failAll(.connectionClosed)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if isClosed {
            request.promise.fail(RedisError.connectionClosed)
            promise?.fail(RedisError.connectionClosed)
            return
        }
        guard !request.commands.isEmpty else {
            request.promise.succeed([])
            promise?.succeed()
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64 * request.commands.count)
        do {
            for command in request.commands { try RESPEncoder.encode(command, into: &buffer) }
        } catch {
            request.promise.fail(error)
            promise?.fail(error)
            return
        }

        let id = nextID
        nextID &+= 1
        var timeout: Scheduled<Void>?
        if let amount = request.timeout {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            timeout = context.eventLoop.scheduleTask(in: amount) { handler.value.timedOut(id) }
        }
        let label = request.commands.count == 1
            ? request.commands[0].name : "pipeline of \(request.commands.count) commands"
        inFlight.append(
            InFlight(
                id: id, promise: request.promise, expected: request.commands.count, label: label, timeout: timeout))
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !isClosed else { return }
        do {
            try reader.feed(unwrapInboundIn(data))
            while let reply = try reader.next() { try deliver(reply) }
        } catch {
            logger.debug("closing Redis connection", metadata: ["goim.redis.error": "\(error)"])
            close(with: error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("Redis connection error", metadata: ["goim.redis.error": "\(error)"])
        close(with: .connectionClosed)
    }

    private func deliver(_ reply: RESPValue) throws(RedisError) {
        guard let head = inFlight.first else { throw .protocolError("a reply arrived that no command asked for") }
        headReplies.append(reply)
        guard headReplies.count == head.expected else { return }
        inFlight.removeFirst()
        head.timeout?.cancel()
        let replies = headReplies
        headReplies = []
        head.promise.succeed(replies)
    }

    private func timedOut(_ id: UInt64) {
        guard let request = inFlight.first(where: { $0.id == id }) else { return }
        logger.debug("Redis command timed out", metadata: ["goim.redis.command": "\(request.label)"])
        // The requests behind it would wait for replies that are out of step: they fail as closed.
        close { $0.id == id ? .timeout(command: request.label) : .connectionClosed }
    }

    private func close(with error: RedisError) {
        close { _ in error }
    }

    /// Closes the channel first, then fails what was in flight: a caller woken by the failure that sends again
    /// must already see this connection inactive, so that the pool gives it a new one.
    private func close(failing error: (InFlight) -> RedisError) {
        let pending = takeAll()
        context?.close(promise: nil)
        for request in pending {
            request.timeout?.cancel()
            request.promise.fail(error(request))
        }
    }

    /// Fails everything in flight and refuses later writes.
    private func failAll(_ error: RedisError) {
        for request in takeAll() {
            request.timeout?.cancel()
            request.promise.fail(error)
        }
    }

    private func takeAll() -> CircularBuffer<InFlight> {
        isClosed = true
        let pending = inFlight
        inFlight.removeAll()
        headReplies = []
        return pending
    }
}
