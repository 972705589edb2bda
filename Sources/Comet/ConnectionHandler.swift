import struct Foundation.Data
import struct Foundation.Date
import GRPCCore
import GoIMProtocol
import GoIMRPC
import Logging
import NIOCore
import NIOWebSocket

/// One client connection (TCP, WebSocket or WebSocket over TLS). Its whole state lives here and is touched only on
/// its event loop: the state machine awaitingAuth → authenticating → open → closed, identity, watch set, room
/// slot and deadline. It has no timer and no Task of its own: the loop's sweep checks `deadline`, and Logic calls
/// are short-lived Tasks whose results hop back to the loop.
///
/// Inbound it receives decoded `Packet`s (from `PacketDecoder` on TCP, from `WebSocketAdapter` on WebSocket).
/// Outbound it writes ready-made `ByteBuffer`s through `output`: its own context on TCP, the output gate in front
/// of NIO's (unused) frame encoder on WebSocket, so pushed frames are written as they were encoded, once for all.
///
/// It is also an outbound handler for one reason: it is the last handler of the pipeline, so every close asked of
/// the channel (`channel.close`, NIO's own shutdown of an event loop, ours) passes through it on its way to NIO's
/// socket, and it stops direct writes there first (see "Direct writes and closing" below).
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = Packet
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State: UInt8 {
        /// Before the first op 7 (and, on WebSocket, before the upgrade).
        case awaitingAuth
        /// Logic `Connect` is in flight; packets are queued and reading is paused.
        case authenticating
        case open
        case closed
    }

    /// Why reading is paused; reading resumes when no reason is left.
    struct PauseReasons: OptionSet {
        let rawValue: UInt8
        static let authenticating = PauseReasons(rawValue: 1)
        static let unwritable = PauseReasons(rawValue: 2)
        static let logic = PauseReasons(rawValue: 4)
    }

    /// Packets queued while authenticating before the connection is closed as abusive.
    static let maxQueuedWhileAuthenticating = 64
    /// Logic `Receive` calls of one connection in flight before its reading pauses (goim called it synchronously).
    static let maxReceivesInFlight: UInt8 = 8

    let comet: Comet
    let loop: LoopState
    let channel: any Channel
    let id: UInt64
    let transport: TransportKind
    let ip: String

    private(set) var state = State.awaitingAuth {
        didSet {
            // The per-loop authenticated count (/metrics): in on becoming open, out on leaving it.
            if state == .open, oldValue != .open {
                loop.authenticated[Int(transport.rawValue)] += 1
            } else if oldValue == .open, state != .open {
                loop.authenticated[Int(transport.rawValue)] -= 1
            }
        }
    }
    /// Where outbound bytes go (nil before the pipeline is ready and after close).
    var output: ChannelHandlerContext?
    /// Handshake deadline until authenticated, then the earlier of the heartbeat deadline and the credential's expiry.
    var deadline: NIODeadline
    private var heartbeatTimeout = TimeAmount.zero
    private var heartbeatDeadline = NIODeadline.distantFuture
    /// When the credential (a JWT's `exp`) runs out, unless the client refreshes it with op 18; `distantFuture` when it
    /// never does (goim mode). Folded into `deadline`, so the sweep enforces it: no timer per connection.
    private var credentialDeadline = NIODeadline.distantFuture
    /// The credential's expiry as Logic gave it (Unix seconds, 0 = never), for logs.
    private var expiresAt: Int64 = 0
    /// When Logic `Connect` was called (to detect a racing Disconnect of the same key).
    private var connectStarted = NIODeadline.distantPast
    private var nextSessionRefresh = NIODeadline.distantFuture
    /// `comet.sessionGeneration` when this connection's session was last written.
    private var sessionGeneration = 0
    /// Logic `Heartbeat` calls that failed in a row (spaces the next tries).
    private var sessionFailures = 0
    /// Position in `loop.connections`.
    var sweepIndex = -1
    /// Position in `room.members`.
    var roomIndex = -1
    private var room: LoopRoom?
    /// Position in `user.members`: this connection's user (mid ≠ 0) and its other connections on this loop.
    var userIndex = -1
    private var user: LoopRoom?
    private(set) var mid: Int64 = 0
    private(set) var key = ""
    /// The WebSocket `Cookie` header, passed to Logic `Connect`.
    var cookie = ""
    /// The watch set (goim's accepts, Sub, Unsub), at most `protocol.maxWatchOps`.
    private var watch = WatchSet([])
    /// The auth body asked for the key in the op 8 reply (`"return_key": true`).
    private var returnKey = false
    /// The auth body's `recover` (a recovery-aware client): room messages carry offsets, op 8 says where it stands.
    private var recoveryRequest: RecoveryRequest?
    /// Where a recovery-aware client is with its room's stream.
    private var stream = StreamPhase.none
    /// Where it is with its user's stream (pushes to its mid with history), when it asked (`recover.mid`).
    private var userStream = StreamPhase.none
    /// Counts recoveries started: an answer for an earlier one (the client changed rooms meanwhile) only gets its reply.
    private var recoveryGeneration: UInt32 = 0

    enum StreamPhase {
        /// goim's client: room messages with offsets reach it as goim's bytes.
        case none
        /// Its history read is in flight: live runs of its room wait here (then go out behind what it recovers).
        case recovering(waiting: [StreamPush])
        /// Live: runs whose offsets it already has (from its recovery) are skipped.
        case live(epoch: String, through: UInt64)
    }
    private var writable = true
    private var inBucket = false
    private var whitelisted = false
    private var needsFlush = false
    private var paused: PauseReasons = []
    private var receivesInFlight: UInt8 = 0
    private var queued: [Packet] = []
    private var closeReason: String?
    private var closeLevel = Logger.Level.info
    /// The WebSocket request line, for logs.
    var requestLine = ""
    /// The socket for `DirectWriter` (-1: every write goes through NIO; `DirectWriter.unresolved`: looked up at the
    /// first push). Set to -1 before NIO can close the socket, on every path: see `stopDirectWrites`.
    var directDescriptor: CInt = -1
    /// The WebSocket client sent Close: nothing but the adapter's echoing Close frame may be written any more.
    private var closeReceived = false
    /// False only when NIO is known to hold no bytes for this channel. Set by every write through NIO (ours, and
    /// the WebSocket adapter's control frames via `NIOOutboundActivity`); cleared by asking NIO. It saves asking
    /// NIO (a generic option lookup) on every push.
    private var nioMayHoldBytes = true

    init(
        comet: Comet, loop: LoopState, channel: any Channel, id: UInt64, transport: TransportKind, ip: String,
        deadline: NIODeadline
    ) {
        self.comet = comet
        self.loop = loop
        self.channel = channel
        self.id = id
        self.transport = transport
        self.ip = ip
        self.deadline = deadline
        comet.counters.liveHandlers.wrappingIncrement(ordering: .relaxed)
    }

    deinit {
        comet.counters.liveHandlers.wrappingDecrement(ordering: .relaxed)
    }

    private var logMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = ["goim.conn": "\(id)", "goim.ip": "\(ip)", "goim.transport": "\(transport)"]
        if state == .open || !key.isEmpty {
            metadata["goim.mid"] = "\(mid)"
            metadata["goim.key"] = "\(key)"
        }
        if let room { metadata["goim.room"] = "\(room.info.id)" }
        return metadata
    }

    private func trace(_ event: @autoclosure () -> String) {
        if whitelisted { comet.whitelist.log(mid: mid, key: key, connection: id, event()) }
    }

    // MARK: pipeline events

    func handlerAdded(context: ChannelHandlerContext) {
        if transport == .tcp { output = context }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let packet = unwrapInboundIn(data)
        switch state {
        case .awaitingAuth:
            if packet.operation == .auth {
                startAuth(packet)
            } else {
                // goim ignores anything before auth (bug 9, kept): only logged, until the handshake timeout.
                comet.counters.increment(\.ignoredBeforeAuth)
                comet.logger.debug(
                    "ignored packet before auth", metadata: logMetadata.merging(["goim.op": "\(packet.operation)"]) { $1 })
            }
        case .authenticating:
            guard queued.count < Self.maxQueuedWhileAuthenticating else {
                close(reason: "more than \(Self.maxQueuedWhileAuthenticating) packets sent while authenticating")
                return
            }
            queued.append(packet)
        case .open:
            handle(packet)
        case .closed:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is NIOOutboundActivity:
            nioMayHoldBytes = true
        case ChannelEvent.inputClosed:
            // The peer's EOF (`allowRemoteHalfClosure` is on for plain TCP and, after the upgrade, WebSocket, so NIO
            // reports it instead of closing the socket by itself): stop, then close.
            stopDirectWrites()
            close(reason: "closed by peer", level: .debug)
        case is WebSocketCloseReceived:
            closeHandshakeStarted()
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Normally already -1 (see `stopDirectWrites`); NIO has just closed the socket and its number may be reused.
        directDescriptor = -1
        context.fireChannelInactive()
    }

    /// Every close through the pipeline passes here before it reaches NIO's socket.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        stopDirectWrites()
        context.close(mode: mode, promise: promise)
    }

    // MARK: Direct writes and closing
    //
    // A byte must never be sent to a descriptor NIO has closed: the next accept may reuse the number for another
    // client. NIO 2.101 closes a stream socket's descriptor only in `BaseSocketChannel.close0(mode: .all)`, which it
    // reaches by these paths; each is covered before the close:
    //
    // - a close through the pipeline (ours, the WebSocket adapter's after the Close handshake, NIO's
    //   `closeGently` at event-loop shutdown): passes `close(context:mode:promise:)` above;
    // - a read error: NIO fires `errorCaught` first (`readable0`), and `errorCaught` stops direct writes;
    // - EOF: with `allowRemoteHalfClosure` NIO only marks the input closed and fires `ChannelEvent.inputClosed`
    //   (`BaseStreamSocketChannel.close0(mode: .input)`), handled above; we then close through the pipeline;
    // - a failed write of NIO's own (`flushNow`), a reset or error from the selector (`reset()`, after it read what
    //   was left, which usually fires `errorCaught` or `inputClosed` first), a failed (re)registration: NIO closes
    //   without telling the pipeline first. There `close0` sets the channel inactive (`isActive` false) right after
    //   `close(2)` and before it calls out to any user code (promises, handlers), all on this event loop; a direct
    //   write happens only on this event loop and only while `channel.isActive` (checked in `deliver`). So
    //   between that `close(2)` and `channelInactive` no direct write can run: not in the same call stack (isActive is
    //   already false when our code is called back) and not in another task (the loop is busy in `close0` until
    //   `channelInactive` has been delivered).

    /// Forgets the descriptor: from now on every write goes through NIO, which knows whether its socket is open.
    private func stopDirectWrites() {
        directDescriptor = -1
    }

    /// The WebSocket client sent Close (the adapter tells us before it writes the echoing Close frame). RFC 6455:
    /// after that frame nothing else may be sent, so from now on this connection writes nothing at all (no pushes,
    /// replies or auth reply, neither directly nor through NIO); the adapter closes the connection once the Close frame
    /// is flushed. A client that never reads it is closed by the sweep after `handshakeTimeout`.
    private func closeHandshakeStarted() {
        guard !closeReceived else { return }
        closeReceived = true
        stopDirectWrites()
        output = nil
        needsFlush = false
        deadline = min(deadline, .now() + comet.handshakeTimeout)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let nowWritable = context.channel.isWritable
        guard nowWritable != writable else { return }
        writable = nowWritable
        if nowWritable {
            resume(.unwritable)
            return
        }
        // Stop reading a client we cannot write to: its replies cannot pile up either.
        pause(.unwritable)
        if comet.closeSlowConsumers {
            // Decide after the current write's flush: a single large push may cross the mark only for a moment.
            context.eventLoop.assumeIsolated().execute {
                guard !self.writable, self.state != .closed else { return }
                self.comet.counters.increment(\.slowConsumersClosed)
                self.close(
                    reason: "slow consumer: more than \(self.comet.configuration.proto.maxOutboundBytes) bytes queued (policy close)")
            }
        } else {
            comet.counters.increment(\.slowConsumerEpisodes)
            comet.logger.debug("slow consumer: skipping pushes while its queue is full (policy drop)", metadata: logMetadata)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // NIO may close the socket right after this event (a read error): no direct write from here on.
        stopDirectWrites()
        switch error {
        case let error as ProtocolError:
            comet.counters.increment(\.protocolErrors)
            close(reason: "protocol error: \(error)")
        case let error as WebSocketAdapter.Failure:
            comet.counters.increment(\.protocolErrors)
            close(reason: "WebSocket error: \(error)")
        case let error as NIOWebSocketError:
            comet.counters.increment(\.protocolErrors)
            close(reason: "WebSocket framing error: \(error)")
        case let error as ByteToMessageDecoderError:
            close(reason: "stream error: \(error)", level: .debug)
        case let error as IOError:
            close(reason: "I/O error: \(error)", level: .debug)
        case ChannelError.ioOnClosedChannel, ChannelError.alreadyClosed, ChannelError.eof:
            close(reason: "closed by peer", level: .debug)
        default:
            close(reason: "error: \(error)")
        }
    }

    // MARK: reading control

    private func pause(_ reason: PauseReasons) {
        let wasPaused = !paused.isEmpty
        paused.insert(reason)
        if !wasPaused { try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false) }
    }

    private func resume(_ reason: PauseReasons) {
        guard paused.contains(reason) else { return }
        paused.remove(reason)
        if paused.isEmpty, state != .closed { try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true) }
    }

    // MARK: authentication

    private func startAuth(_ packet: Packet) {
        state = .authenticating
        connectStarted = .now()
        pause(.authenticating)
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let token = Data(packet.body.readableBytesView)
        returnKey = AuthKeyRequest.isRequested(in: packet.body.readableBytesView)
        recoveryRequest = RecoveryRequest.parse(packet.body.readableBytesView)
        let version = packet.version
        let sequence = packet.sequence
        let logic = comet.logic
        let server = comet.server
        let cookie = self.cookie
        comet.logicCalls.spawn(limited: false) {
            let result: Result<Goim_Logic_ConnectReply, any Error>
            do {
                result = .success(try await logic.connect(server: server, cookie: cookie, token: token))
            } catch {
                result = .failure(error)
            }
            bound.eventLoop.execute {
                bound.value.authCompleted(result, version: version, sequence: sequence)
            }
        }
    }

    private func authCompleted(_ result: Result<Goim_Logic_ConnectReply, any Error>, version: Int16, sequence: Int32) {
        let reply: Goim_Logic_ConnectReply
        switch result {
        case .failure(let error):
            guard state == .authenticating else { return }
            comet.counters.increment(\.authFailures)
            // goim closes with nothing sent.
            close(reason: "auth failed: Logic Connect: \(error)")
            return
        case .success(let value):
            reply = value
        }
        guard state == .authenticating, let output else {
            // Closed (timeout, peer) while Logic was storing the session: nobody holds it now, so undo it, unless
            // the key has meanwhile been taken by another connection on this comet.
            if comet.buckets.entry(for: reply.key) == nil {
                comet.disconnect(mid: reply.mid, key: reply.key, connection: id)
            }
            return
        }
        guard reply.accepts.count <= comet.maxWatchOps else {
            comet.counters.increment(\.watchLimitCloses)
            if comet.buckets.entry(for: reply.key) == nil {
                comet.disconnect(mid: reply.mid, key: reply.key, connection: id)
            }
            close(
                reason: "auth accepts \(reply.accepts.count) operations, over protocol.maxWatchOps (\(comet.maxWatchOps))",
                level: .warning)
            return
        }
        let credentialDeadline = reply.expiresAt > 0 ? Self.deadline(forUnixTime: reply.expiresAt) : .distantFuture
        if credentialDeadline <= .now() {
            comet.counters.increment(\.credentialExpiries)
            if comet.buckets.entry(for: reply.key) == nil {
                comet.disconnect(mid: reply.mid, key: reply.key, connection: id)
            }
            close(reason: "credential expired (exp \(reply.expiresAt)) before the connection opened")
            return
        }
        mid = reply.mid
        key = reply.key
        expiresAt = reply.expiresAt
        self.credentialDeadline = credentialDeadline
        watch = WatchSet(reply.accepts)
        heartbeatTimeout = reply.heartbeat > 0 ? .nanoseconds(reply.heartbeat) : Comet.defaultHeartbeat
        whitelisted = comet.whitelist.contains(mid)
        state = .open
        comet.counters.increment(\.authenticated)

        let entry = BucketEntry(id: id, handler: NIOLoopBound(self, eventLoop: channel.eventLoop))
        if let old = comet.buckets.put(key: key, entry: entry) {
            let newID = id
            old.eventLoop.execute { old.handler.value.replaced(by: newID) }
        }
        inBucket = true
        if !reply.roomID.isEmpty { join(reply.roomID) }
        if mid != 0 { user = loop.join(self, user: mid, directory: comet.users) }
        comet.repairRoutingIfRaced(mid: mid, key: key, connectStarted: connectStarted, connection: id)

        if let recoveryRequest, !reply.roomID.isEmpty || (recoveryRequest.mid != nil && mid != 0) {
            // A recovery-aware client: its op 8 says where it stands in the room's (and its user's) history, so it is
            // written once the history reads are back (`recovered`); live messages wait for it meanwhile.
            startRecovery(
                room: reply.roomID, request: recoveryRequest, user: mid != 0 ? recoveryRequest.mid : nil,
                replyOperation: .authReply, version: version, sequence: sequence)
        } else {
            // op 8, ver/seq echoed, empty body (goim) unless the client asked for its key. Written after the bucket and
            // room registration (goim wrote it first), so a client that has its op 8 is already counted and reachable;
            // pushes cannot overtake it: they hop to this loop and run after this function.
            nioMayHoldBytes = true
            output.writeAndFlush(
                NIOAny(Wire.packet(
                    operation: .authReply, version: version, sequence: sequence,
                    body: returnKey ? AuthKeyRequest.replyBody(key: key) : nil, transport: transport,
                    allocator: channel.allocator)),
                promise: nil)
        }
        let now = NIODeadline.now()
        heartbeatDeadline = now + heartbeatTimeout
        deadline = min(heartbeatDeadline, credentialDeadline)
        nextSessionRefresh = now + comet.randomSessionRefresh()
        sessionGeneration = comet.sessionGeneration.load(ordering: .relaxed)
        comet.logger.debug("authenticated", metadata: logMetadata)
        trace(
            "auth ok room:\(reply.roomID) accepts:\(reply.accepts) heartbeat:\(heartbeatTimeout.nanoseconds / 1_000_000)ms cookie:\(cookie)")

        if !queued.isEmpty {
            let packets = queued
            queued = []
            for packet in packets where state == .open { handle(packet) }
            flushIfNeeded()
        }
        resume(.authenticating)
    }

    /// The same key authenticated again on this comet: the newer connection wins.
    func replaced(by newer: UInt64) {
        guard state != .closed else { return }
        comet.logger.info("closing connection: same key connected again", metadata: logMetadata.merging(["goim.newConn": "\(newer)"]) { $1 })
        close(reason: "replaced by connection \(newer) with the same key", level: .debug)
    }

    // MARK: open connection

    private func handle(_ packet: Packet) {
        trace("read op:\(packet.operation.rawValue) ver:\(packet.version) seq:\(packet.sequence) body:\(packet.body.readableBytes)")
        switch packet.operation {
        case .heartbeat:
            let now = NIODeadline.now()
            heartbeatDeadline = now + heartbeatTimeout  // only op 2 re-arms the timeout, as in goim
            deadline = min(heartbeatDeadline, credentialDeadline)
            let online = room?.info.reportedOnline ?? 0
            write(Wire.heartbeatReply(
                online: online, version: packet.version, sequence: packet.sequence, transport: transport,
                allocator: channel.allocator))
            trace("heartbeat reply online:\(online)")
            let generation = comet.sessionGeneration.load(ordering: .relaxed)
            if generation != sessionGeneration {
                // Redis lost this comet's sessions: write this one again soon (at a heartbeat after a random delay).
                sessionGeneration = generation
                nextSessionRefresh = min(nextSessionRefresh, now + comet.randomRewriteDelay())
            }
            if now >= nextSessionRefresh {
                nextSessionRefresh = now + comet.randomSessionRefresh()
                refreshSession()
            }
        case .changeRoom:
            if let change = RoomChangeRequest.parse(packet.body.readableBytesView) {
                // A recovery-aware room change: op 13 says where the new room stands, what was missed follows it.
                changeRoom(to: change.room)
                if change.room.isEmpty {
                    stream = .live(epoch: "", through: 0)
                    reply(
                        to: packet, operation: .changeRoomReply,
                        body: RecoveryReply(key: nil, room: "", epoch: "", offset: 0, recovering: false, recovered: false).body)
                } else {
                    startRecovery(
                        room: change.room, request: change.recover, replyOperation: .changeRoomReply, version: packet.version,
                        sequence: packet.sequence)
                }
                return
            }
            let target = String(buffer: packet.body)
            changeRoom(to: target)
            // goim's form while a recovery is in flight: what waited was the old room's; the new one has no offset to
            // start from (the recovery's answer only writes its reply).
            if case .recovering = stream { stream = .live(epoch: "", through: 0) }
            reply(to: packet, operation: .changeRoomReply, body: packet.body)
        case .sub:
            if let ops = WatchOps.parse(packet.body) {
                watch.insert(contentsOf: ops)
                guard watch.count <= comet.maxWatchOps else {
                    comet.counters.increment(\.watchLimitCloses)
                    close(
                        reason: "Sub: watch set of \(watch.count) operations, over protocol.maxWatchOps (\(comet.maxWatchOps))",
                        level: .warning)
                    return
                }
            }
            reply(to: packet, operation: .subReply, body: packet.body)
        case .unsub:
            if let ops = WatchOps.parse(packet.body) {
                watch.remove(contentsOf: ops)
            }
            reply(to: packet, operation: .unsubReply, body: packet.body)
        case .tokenRefresh:
            refreshToken(packet)
        default:
            forwardToLogic(packet)
            reply(to: packet, operation: packet.operation, body: nil)
        }
    }

    /// Replies echo the request's `ver` and `seq`; an echoed body is copied into the reply (goim bug 5).
    private func reply(to packet: Packet, operation: Operation, body: ByteBuffer?) {
        write(Wire.packet(
            operation: operation, version: packet.version, sequence: packet.sequence, body: body, transport: transport,
            allocator: channel.allocator))
        trace("reply op:\(operation.rawValue) seq:\(packet.sequence)")
    }

    /// Writes without flushing; the flush comes at the end of the read batch (`channelReadComplete`).
    private func write(_ buffer: ByteBuffer) {
        guard let output else { return }
        nioMayHoldBytes = true
        output.write(NIOAny(buffer), promise: nil)
        needsFlush = true
    }

    private func flushIfNeeded() {
        guard needsFlush else { return }
        needsFlush = false
        output?.flush()
    }

    /// Logic `Heartbeat`: refreshes the session's expiry in Redis, or writes it again if Redis lost it. A failed call is
    /// tried again after 1 s, 2 s, 4 s, … (`Comet.sessionRetryDelay`) rather than at the next session refresh, minutes
    /// away: a session Redis lost (restarted, failed over) would otherwise stay lost, and mids pushes miss this client,
    /// that long.
    private func refreshSession() {
        let logic = comet.logic
        let (mid, key, server, logger, counters, id) = (mid, key, comet.server, comet.logger, comet.counters, id)
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let hadFailed = sessionFailures > 0
        comet.logicCalls.spawn(limited: false) {
            do {
                try await logic.heartbeat(mid: mid, key: key, server: server)
                // Only a connection whose last call failed has a count to reset: no loop hop otherwise.
                if hadFailed { bound.eventLoop.execute { bound.value.sessionFailures = 0 } }
            } catch {
                counters.increment(\.logicErrors)
                logger.warning(
                    "Logic Heartbeat failed; trying again at a later client heartbeat",
                    metadata: ["goim.conn": "\(id)", "goim.mid": "\(mid)", "goim.key": "\(key)", "error": "\(error)"])
                bound.eventLoop.execute {
                    let handler = bound.value
                    handler.sessionFailures += 1
                    handler.nextSessionRefresh = min(
                        handler.nextSessionRefresh, .now() + handler.comet.sessionRetryDelay(failures: handler.sessionFailures))
                }
            }
        }
    }

    /// Runs a Logic call on behalf of the client (Receive, token refresh), counted in `receivesInFlight` so that a
    /// client flooding such packets pauses its own reading, and hands the result to `completion` on the event loop.
    private func callLogic<T: Sendable>(
        _ call: @escaping @Sendable () async throws -> T,
        completion: @escaping (ConnectionHandler, Result<T, any Error>) -> Void
    ) {
        receivesInFlight += 1
        if receivesInFlight >= Self.maxReceivesInFlight { pause(.logic) }
        let bound = NIOLoopBound((handler: self, completion: completion), eventLoop: channel.eventLoop)
        comet.logicCalls.spawn(limited: false) {
            let result: Result<T, any Error>
            do {
                result = .success(try await call())
            } catch {
                result = .failure(error)
            }
            bound.eventLoop.execute {
                let (handler, completion) = bound.value
                handler.receivesInFlight -= 1
                if handler.receivesInFlight < Self.maxReceivesInFlight { handler.resume(.logic) }
                completion(handler, result)
            }
        }
    }

    /// Op 18: Logic verifies the fresh token (same member, same key); the connection then lives until the new
    /// expiry. The answer is op 19 (`TokenRefreshReply`), ver/seq echoed.
    private func refreshToken(_ packet: Packet) {
        let (logic, server, mid, key) = (comet.logic, comet.server, mid, key)
        let token = Data(packet.body.readableBytesView)
        let (version, sequence) = (packet.version, packet.sequence)
        callLogic({ try await logic.refreshToken(mid: mid, key: key, server: server, token: token) }) { handler, result in
            handler.tokenRefreshed(result, version: version, sequence: sequence)
        }
    }

    private func tokenRefreshed(_ result: Result<Int64, any Error>, version: Int16, sequence: Int32) {
        guard state == .open else { return }
        let body: ByteBuffer
        switch result {
        case .success(let newExpiry):
            comet.counters.increment(\.credentialRefreshes)
            expiresAt = newExpiry
            credentialDeadline = newExpiry > 0 ? Self.deadline(forUnixTime: newExpiry) : .distantFuture
            deadline = min(heartbeatDeadline, credentialDeadline)
            body = TokenRefreshReply.accepted(expiresAt: newExpiry)
            trace("token refreshed: expires_at \(newExpiry)")
        case .failure(let error):
            comet.counters.increment(\.credentialRefreshFailures)
            let (code, message) = Self.refreshFailure(error)
            body = TokenRefreshReply.failed(code: code, message: message)
            comet.logger.info("token refresh refused", metadata: logMetadata.merging(["error": "\(message)"]) { $1 })
        }
        write(Wire.packet(
            operation: .tokenRefreshReply, version: version, sequence: sequence, body: body, transport: transport,
            allocator: channel.allocator))
        flushIfNeeded()
    }

    /// The op 19 code and message for a failed refresh: a refused token, or refresh not available.
    static func refreshFailure(_ error: any Error) -> (Int, String) {
        if let error = error as? RPCError {
            switch error.code {
            case .unauthenticated, .invalidArgument, .permissionDenied:
                return (TokenRefreshReply.refused, error.message)
            case .unimplemented:
                return (TokenRefreshReply.unavailable, "token refresh is not available: logic does not serve it")
            default:
                return (TokenRefreshReply.unavailable, "token refresh is not available right now: \(error.code)")
            }
        }
        return (TokenRefreshReply.unavailable, "token refresh is not available right now")
    }

    /// A wall-clock Unix time as a monotonic deadline (NIO's deadlines are monotonic).
    static func deadline(forUnixTime seconds: Int64) -> NIODeadline {
        let remaining = Double(seconds) - Date().timeIntervalSince1970
        guard remaining > 0 else { return .now() }
        return .now() + .nanoseconds(Int64(min(remaining, 100 * 365 * 86_400) * 1e9))
    }

    private func forwardToLogic(_ packet: Packet) {
        var proto = Goim_Protocol_Proto()
        proto.ver = Int32(packet.version)
        proto.op = packet.operation.rawValue
        proto.seq = packet.sequence
        proto.body = Data(packet.body.readableBytesView)
        let (logic, mid, message) = (comet.logic, mid, proto)
        callLogic({ try await logic.receive(mid: mid, proto: message) }) { handler, result in
            guard case .failure(let error) = result else { return }
            handler.comet.counters.increment(\.logicErrors)
            handler.comet.logger.warning(
                "Logic Receive failed", metadata: ["goim.conn": "\(handler.id)", "goim.mid": "\(mid)", "error": "\(error)"])
        }
    }

    // MARK: recovery

    /// Reads the room's history after the client's offset (only the position for a first connect) through logic.
    /// The client already is a member of the room: whatever reaches the room from now on waits in `stream`, and
    /// whatever reached it before is in the history read (job writes history before any comet sees a message), so
    /// nothing falls between the two.
    /// With `user` (at auth only), the user's stream is read the same way, after the room's.
    private func startRecovery(
        room: String, request: RecoveryRequest, user position: StreamPosition? = nil, replyOperation: Operation,
        version: Int16, sequence: Int32
    ) {
        stream = .recovering(waiting: [])
        if position != nil { userStream = .recovering(waiting: []) }
        recoveryGeneration &+= 1
        let generation = recoveryGeneration
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let logic = comet.logic
        let recoverLimit = Int32(clamping: comet.configuration.history.recoverLimit)
        let mid = self.mid
        comet.logicCalls.spawn(limited: false) {
            let result: Result<Swiftgoim_Logic_HistoryReply, any Error>
            do {
                result = .success(room.isEmpty ? Swiftgoim_Logic_HistoryReply() : try await logic.roomHistory(
                    room: room, since: request.wantsRecovery ? request.offset : 0, epoch: request.epoch,
                    limit: request.wantsRecovery ? recoverLimit : 0))
            } catch {
                result = .failure(error)
            }
            var read: Result<Swiftgoim_Logic_HistoryReply, any Error>?
            if let position {
                do {
                    read = .success(try await logic.midHistory(
                        mid: mid, since: position.wantsRecovery ? position.offset : 0, epoch: position.epoch,
                        limit: position.wantsRecovery ? recoverLimit : 0))
                } catch {
                    read = .failure(error)
                }
            }
            let userResult = read
            bound.eventLoop.execute {
                let userRecovery = position.flatMap { position in
                    userResult.map { bound.value.recoveredUser($0, position: position) }
                }
                bound.value.recovered(
                    result, room: room, request: request, user: userRecovery, generation: generation,
                    replyOperation: replyOperation, version: version, sequence: sequence)
            }
        }
    }

    /// What a user stream's recovery gives: op 8's `mid` member, the missed messages, and the live ones that waited.
    struct UserRecovery {
        var reply: RecoveryReply.Mid
        var missed: [OffsetPackets.Item]
        var waiting: [StreamPush]
    }

    /// Takes the user stream's history read: the client is live on its user's stream from here on.
    private func recoveredUser(_ result: Result<Swiftgoim_Logic_HistoryReply, any Error>, position: StreamPosition) -> UserRecovery {
        var waiting: [StreamPush] = []
        if case .recovering(let held) = userStream { waiting = held }
        var recovery = UserRecovery(
            reply: .init(epoch: "", offset: 0, recovering: position.wantsRecovery, recovered: false), missed: [],
            waiting: waiting)
        if let read = take(result, wantsRecovery: position.wantsRecovery, stream: user, kind: "user") {
            recovery.reply.epoch = read.epoch
            recovery.reply.offset = read.top
            recovery.reply.recovered = position.wantsRecovery && read.complete
            recovery.missed = Comet.items(read.messages)
            userStream = .live(epoch: read.epoch, through: read.top)
        } else {
            userStream = .live(epoch: "", through: 0)
        }
        return recovery
    }

    /// One stream's history read for a recovering client, when its stream keeps history: counted, and this comet's
    /// order of the stream starts after what was read at the latest (it may not have passed on any offset of it yet).
    private func take(
        _ result: Result<Swiftgoim_Logic_HistoryReply, any Error>, wantsRecovery: Bool, stream member: LoopRoom?,
        kind: String
    ) -> (epoch: String, top: UInt64, complete: Bool, messages: [Swiftgoim_Logic_HistoryEntry])? {
        switch result {
        case .success(let history) where history.enabled:
            let top = max(history.top, history.messages.last?.offset ?? 0)
            if wantsRecovery {
                comet.counters.increment(history.complete ? \.recoveries : \.recoveriesIncomplete)
            }
            if !history.epoch.isEmpty, let member {
                member.info.sequencer(maxHeld: comet.configuration.history.maxHeld, counters: comet.counters)
                    .start(epoch: history.epoch, after: top)
            }
            return (history.epoch, top, history.complete, history.messages)
        case .success:
            return nil
        case .failure(let error):
            comet.counters.increment(\.recoveryFailures)
            comet.logger.warning(
                "cannot read \(kind) history for a recovering client", metadata: logMetadata.merging(["error": "\(error)"]) { $1 })
            return nil
        }
    }

    /// The user stream's missed messages (those the connection watches), each as goim's job sends a push to keys,
    /// with `-offset` in `seq`.
    private func writeMissed(_ recovery: UserRecovery) {
        for item in recovery.missed {
            let operation = item.bytes.getInteger(at: item.bytes.readerIndex + 8, as: Int32.self) ?? 0
            guard watch.contains(operation) else { continue }
            let bytes = Push(rawBody: OffsetPackets.negatingSequences(item.bytes), allocator: channel.allocator)
                .bytes(for: transport)
            output?.write(NIOAny(bytes), promise: nil)
            loop.delivered += 1
            loop.bytesWritten &+= bytes.readableBytes
        }
    }

    /// Writes op 8 (or op 13) with where the client stands, then what it missed (one op 9 of packets with offsets), then
    /// the live runs that waited, without the offsets it just got. An answer for an earlier recovery (the client
    /// changed rooms meanwhile) only writes its reply.
    private func recovered(
        _ result: Result<Swiftgoim_Logic_HistoryReply, any Error>, room id: String, request: RecoveryRequest,
        user: UserRecovery?, generation: UInt32, replyOperation: Operation, version: Int16, sequence: Int32
    ) {
        guard state == .open else { return }
        let current = generation == recoveryGeneration && (id.isEmpty ? room == nil : room?.info.id == id)
        guard current, case .recovering(let waiting) = stream else {
            nioMayHoldBytes = true
            output?.write(
                NIOAny(Wire.packet(
                    operation: replyOperation, version: version, sequence: sequence,
                    body: RecoveryReply(
                        key: replyOperation == .authReply && returnKey ? key : nil, room: id, epoch: "", offset: 0,
                        recovering: request.wantsRecovery, recovered: false, mid: user?.reply
                    ).body, transport: transport, allocator: channel.allocator)),
                promise: nil)
            if let user { writeMissed(user) }
            output?.flush()
            for push in user?.waiting ?? [] { deliverToUser(push) }
            return
        }
        var reply = RecoveryReply(
            key: replyOperation == .authReply && returnKey ? key : nil, room: id, epoch: "", offset: 0,
            recovering: request.wantsRecovery, recovered: false, mid: user?.reply)
        var missed: ByteBuffer?
        if let read = take(result, wantsRecovery: request.wantsRecovery, stream: room, kind: "room") {
            reply.epoch = read.epoch
            reply.offset = read.top
            reply.recovered = request.wantsRecovery && read.complete
            if !read.messages.isEmpty {
                var body = ByteBuffer()
                for item in Comet.items(read.messages) { body.writeImmutableBuffer(item.bytes) }
                missed = body
            }
            stream = .live(epoch: read.epoch, through: read.top)
        } else {
            stream = .live(epoch: "", through: 0)
        }
        nioMayHoldBytes = true
        output?.write(
            NIOAny(Wire.packet(
                operation: replyOperation, version: version, sequence: sequence, body: reply.body, transport: transport,
                allocator: channel.allocator)),
            promise: nil)
        if let missed {
            let push = Push(rawBody: missed, allocator: channel.allocator)
            let bytes = push.bytes(for: transport)
            output?.write(NIOAny(bytes), promise: nil)
            loop.delivered += 1
            loop.bytesWritten &+= bytes.readableBytes
        }
        if let user { writeMissed(user) }
        output?.flush()
        for push in waiting { deliver(push) }
        for push in user?.waiting ?? [] { deliverToUser(push) }
        trace("recovery room:\(id) epoch:\(reply.epoch) offset:\(reply.offset) recovered:\(reply.recovered)")
    }

    // MARK: rooms and watch set

    private func join(_ id: String) {
        room = loop.join(self, room: id, directory: comet.rooms)
    }

    private func leaveRoom() {
        guard let room else { return }
        loop.leave(self, room: room, directory: comet.rooms)
        self.room = nil
    }

    /// goim's ChangeRoom. Changing to the current room changes nothing (goim dropped a client alone in it:
    /// bug 13); an empty id leaves the room.
    private func changeRoom(to id: String) {
        if let room, room.info.id == id { return }
        leaveRoom()
        if !id.isEmpty { join(id) }
    }

    func watches(_ operation: Int32) -> Bool {
        state == .open && watch.contains(operation)
    }

    // MARK: pushes

    /// Writes an already encoded push and flushes (one flush per channel per push). Skipped while the channel is
    /// unwritable: the slow-consumer policy then closes it or drops what does not fit.
    func deliver(_ push: Push) {
        guard state == .open, let output else { return }
        guard writable else {
            loop.dropped += 1
            return
        }
        let bytes = push.bytes(for: transport)
        loop.delivered += 1
        if directDescriptor == DirectWriter.unresolved { directDescriptor = DirectWriter.descriptor(of: channel) ?? -1 }
        // `channel.isActive` (one relaxed atomic load) makes the descriptor's validity structural: NIO clears it before
        // calling out to any code after it closed the socket (see "Direct writes and closing").
        if directDescriptor >= 0, channel.isActive, !nioMayHoldBytes || nioIsEmpty() {
            switch DirectWriter.write(bytes, to: directDescriptor) {
            case .complete:
                loop.directWrites += 1
            case .partial(let written):
                loop.directWrites += 1
                // The kernel's buffer is full: NIO queues the rest and the slow-consumer policy applies as usual. If
                // NIO's write then fails it closes the socket at once; `channelInactive` clears the descriptor before
                // `writeAndFlush` returns, and nothing below writes directly.
                nioMayHoldBytes = true
                output.writeAndFlush(NIOAny(bytes.getSlice(at: bytes.readerIndex + written, length: bytes.readableBytes - written)!), promise: nil)
            case .failed(let error):
                loop.delivered -= 1
                close(reason: "write failed: \(DirectWriter.describe(errno: error))", level: .debug)
                return
            }
        } else {
            nioMayHoldBytes = true
            output.writeAndFlush(NIOAny(bytes), promise: nil)
        }
        loop.bytesWritten &+= bytes.readableBytes
        if whitelisted { trace("push \(push.bytes(for: transport).readableBytes) bytes") }
    }

    /// A run of a room with history: goim's bytes to goim's clients; to a recovery-aware client the bytes with offsets,
    /// without what it already has, held while its recovery read is in flight.
    func deliver(_ push: StreamPush) {
        deliver(push, phase: &stream)
    }

    /// A message of this connection's user stream (pushes to its mid with history), if it watches the operation.
    func deliverToUser(_ push: StreamPush) {
        guard watches(push.operation) else { return }
        deliver(push, phase: &userStream)
    }

    private func deliver(_ push: StreamPush, phase: inout StreamPhase) {
        switch phase {
        case .none:
            deliver(push.plain)
        case .recovering(var waiting):
            guard state == .open else { return }
            phase = .none  // (no copy of the array while appending)
            waiting.append(push)
            phase = .recovering(waiting: waiting)
        case .live(let epoch, let through):
            guard push.epoch == epoch, through > 0 else {
                deliver(push.withOffsets)
                return
            }
            if let rest = push.after(through) { deliver(rest) }
        }
    }

    /// Asks NIO whether it holds bytes for this channel; remembers a "no".
    private func nioIsEmpty() -> Bool {
        guard (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) == 0 else { return false }
        nioMayHoldBytes = false
        return true
    }

    func pushIfWatching(_ operation: Int32, _ push: Push) {
        if watches(operation) { deliver(push) }
    }

    // MARK: closing

    /// The sweep found `deadline` passed (`now` is the sweep's time).
    func expire(now: NIODeadline) {
        if closeReceived, state != .closed {
            close(reason: "WebSocket close handshake: the client did not take our Close frame in time")
            return
        }
        switch state {
        case .awaitingAuth, .authenticating:
            comet.counters.increment(\.handshakeTimeouts)
            close(reason: "handshake timeout: no successful auth within \(comet.configuration.proto.handshakeTimeout)")
        case .open where credentialDeadline < now:
            comet.counters.increment(\.credentialExpiries)
            close(reason: "credential expired (exp \(expiresAt)) and was not refreshed (op 18)")
        case .open:
            comet.counters.increment(\.heartbeatTimeouts)
            close(reason: "heartbeat timeout: no heartbeat within \(heartbeatTimeout.nanoseconds / 1_000_000) ms")
        case .closed:
            break
        }
    }

    /// Closes the connection; `closed()` runs when the channel is closed and does the bookkeeping.
    func close(reason: String, level: Logger.Level = .info) {
        guard state != .closed, closeReason == nil else { return }
        closeReason = reason
        closeLevel = level
        channel.close(promise: nil)
    }

    /// Runs once, from the channel's close future, whoever closed it: removes the connection from the sweep list,
    /// the IP table, its room and its bucket, then calls Logic `Disconnect` once, unless a newer connection with the
    /// same key holds the session now (then Disconnect would delete the newer session's routing: goim bug 1).
    func closed() {
        guard state != .closed else { return }
        let wasOpen = state == .open
        state = .closed
        loop.remove(self)
        comet.admission.release(ip: ip)
        leaveRoom()
        if let user {
            loop.leave(self, user: user, directory: comet.users)
            self.user = nil
        }
        var holder = false
        if inBucket {
            holder = comet.buckets.remove(key: key, id: id)
            inBucket = false
        }
        if wasOpen {
            if holder {
                comet.disconnect(mid: mid, key: key, connection: id)
            } else {
                comet.counters.increment(\.replaced)
            }
        }
        let reason = closeReason ?? (closeReceived ? "closed by the client (WebSocket Close)" : "closed by peer")
        let level = closeReason == nil ? Logger.Level.debug : closeLevel
        comet.logger.log(level: level, "connection closed: \(reason)", metadata: logMetadata)
        trace("closed: \(reason)")
        output = nil
        directDescriptor = -1
        queued = []
    }
}

/// Closes a connection refused at accept (per-IP limit) as soon as it is active.
final class RefuseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        context.close(promise: nil)
    }
}
