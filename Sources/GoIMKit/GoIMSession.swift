import Foundation
import GoIMClient
import GoIMProtocol
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A push received from the comet, or the reply to something this client sent (op 13, 15, 17, 19, echoed business
/// operations).
public struct GoIMMessage: Sendable, Equatable {
    public var operation: Int32
    public var body: [UInt8]
    /// The room this client was in when the message arrived.
    public var room: String
    /// The message's offset in its stream's history (docs/history.md); 0 for messages without history.
    public var offset: UInt64
    /// Which history `offset` belongs to.
    public var stream: GoIMStream = .none

    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// The history a message's offset belongs to.
public enum GoIMStream: Sendable, Equatable {
    /// No history: goim's pushes, broadcasts, replies.
    case none
    /// The room's (positive `seq` on the wire).
    case room
    /// The pushes to this client's user, `history.mids` (negative `seq` on the wire).
    case user
}

/// Where a room stands for this client after op 8 or op 13 of a server with history: the epoch and last offset the
/// client now has, whether it asked to recover, and whether it got everything it missed.
public struct GoIMStanding: Sendable, Equatable {
    public var room: String
    public var epoch: String
    public var offset: UInt64
    public var recovering: Bool
    public var recovered: Bool
    /// Where the user's stream stands (op 8 only, with `recoverUser` and a server keeping user history).
    public var user: GoIMUserStanding?
}

/// op 8's `mid` member: the user stream's epoch and last offset, whether the client asked to recover and got it all.
public struct GoIMUserStanding: Sendable, Equatable {
    public var epoch: String
    public var offset: UInt64
    public var recovering: Bool
    public var recovered: Bool
}

/// The connection's life as the app sees it.
public enum GoIMState: Sendable, Equatable {
    case connecting(GoIMEndpoint)
    /// Authenticated. `standing` is nil against a server without history (goim's).
    case connected(GoIMEndpoint, standing: GoIMStanding?)
    /// The room changed (op 13); `standing` as for `connected`.
    case roomChanged(room: String, standing: GoIMStanding?)
    /// Lost; the next attempt starts in `retryIn` (to the next address).
    case disconnected(reason: String, retryIn: Duration)
    /// `close()` was called: no more reconnects.
    case closed
}

/// What a session needs: where the comets are, what op 7 carries, and the timing.
public struct GoIMConfiguration: Sendable {
    /// What op 7 carries.
    public enum Credentials: Sendable {
        /// goim's JSON auth body (mid, key, room_id, platform, accepts); the session adds `recover` to it.
        case authBody(AuthBody)
        /// Bytes sent as they are (a JWT, or an app's own format). Recovery on connect needs a JSON body: with a raw
        /// token it is off (room changes still recover).
        case token([UInt8])
    }

    /// Tried in order, the next one after each loss (several comets, or logic's `/goim/nodes/weighted` answer).
    public var endpoints: [GoIMEndpoint]
    public var credentials: Credentials
    /// How often to send op 2. A missing op 3 within one interval means the connection is dead.
    public var heartbeat: Duration = .seconds(30)
    public var backoff = Backoff()
    /// Ask for what was missed on reconnect (servers with history; goim's comet ignores the member).
    public var recover = true
    /// Also ask for the pushes to this client's user (`recover.mid`): offsets and recovery of its offline messages
    /// (servers with `[history] mids`; otherwise nothing changes). Needs the JSON auth body.
    public var recoverUser = true
    public var connectTimeout: Duration = .seconds(10)
    /// For `wss://`; nil = a client context trusting the system's roots.
    public var tls: NIOSSLContext?
    public var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    public init(endpoints: [GoIMEndpoint], credentials: Credentials) {
        self.endpoints = endpoints
        self.credentials = credentials
    }

    /// `urls` parsed with `GoIMEndpoint(_:)`.
    public init(urls: [String], credentials: Credentials) throws(GoIMKitError) {
        var endpoints: [GoIMEndpoint] = []
        for url in urls { endpoints.append(try GoIMEndpoint(url)) }
        self.init(endpoints: endpoints, credentials: credentials)
    }
}

/// A connection to a comet that stays connected until `close()`: it reconnects after any loss (the next address,
/// after a backoff with full jitter), sends heartbeats and notices a dead connection within one interval, and in rooms
/// with history resumes where it left off, delivering each message once, in order (deduplicated by offset).
///
/// ```swift
/// let session = try GoIMSession(GoIMConfiguration(
///     urls: ["ws://127.0.0.1:3102/sub"], credentials: .authBody(AuthBody(mid: 1, roomID: "live://1000", accepts: [1000]))))
/// session.start()
/// for await message in session.messages { print(message.offset, message.text) }
/// ```
public final class GoIMSession: Sendable {
    public let configuration: GoIMConfiguration
    /// Pushes and replies; finishes after `close()`. One consumer.
    public let messages: AsyncStream<GoIMMessage>
    /// Connection states; finishes after `.closed`. One consumer.
    public let states: AsyncStream<GoIMState>
    private let messageSink: AsyncStream<GoIMMessage>.Continuation
    private let stateSink: AsyncStream<GoIMState>.Continuation
    private let inner: Mutex<Inner>
    private let tls: NIOSSLContext?

    struct Inner {
        var room: String
        var epoch = ""
        var lastOffset: UInt64 = 0
        /// The user stream's epoch and last offset delivered.
        var userEpoch = ""
        var userOffset: UInt64 = 0
        /// Where each room left off, so that coming back to it recovers what it missed meanwhile.
        var positions: [String: (epoch: String, offset: UInt64)] = [:]
        /// A room change sent and not answered yet: messages until op 13 still belong to the old room.
        var changing: (room: String, epoch: String, offset: UInt64)?
        var client: GoIMClient?
        var closed = false
        var task: Task<Void, Never>?
        var sequence: Int32 = 0
        var online: Int32 = 0
    }

    public init(_ configuration: GoIMConfiguration) throws {
        guard !configuration.endpoints.isEmpty else { throw GoIMKitError.noEndpoints }
        self.configuration = configuration
        (messages, messageSink) = AsyncStream.makeStream(of: GoIMMessage.self, bufferingPolicy: .unbounded)
        (states, stateSink) = AsyncStream.makeStream(of: GoIMState.self, bufferingPolicy: .unbounded)
        var room = ""
        if case .authBody(let body) = configuration.credentials { room = body.roomID }
        inner = Mutex(Inner(room: room))
        if configuration.tls == nil, configuration.endpoints.contains(where: { $0.scheme == .wss }) {
            tls = try NIOSSLContext(configuration: .makeClientConfiguration())
        } else {
            tls = configuration.tls
        }
    }

    /// The room this client is in.
    public var room: String { inner.withLock { $0.room } }
    /// The last offset delivered in `room` and its epoch (empty before a server with history answered).
    public var position: (epoch: String, offset: UInt64) { inner.withLock { ($0.epoch, $0.lastOffset) } }
    /// The same for the user's stream (pushes to its mid with history).
    public var userPosition: (epoch: String, offset: UInt64) { inner.withLock { ($0.userEpoch, $0.userOffset) } }
    /// The room's online count from the last heartbeat reply.
    public var online: Int32 { inner.withLock { $0.online } }

    /// Runs `run()` in a task of its own; `close()` ends it.
    public func start() {
        let task = Task { await self.run() }
        inner.withLock { $0.task = task }
    }

    /// Connects and reconnects until `close()` or cancellation.
    public func run() async {
        var attempt = 0
        var index = 0
        while !isClosed, !Task.isCancelled {
            let endpoint = configuration.endpoints[index % configuration.endpoints.count]
            stateSink.yield(.connecting(endpoint))
            var reason: String
            do {
                try await serve(endpoint) { attempt = 0 }
                reason = GoIMKitError.connectionClosed.description
            } catch let error as GoIMKitError {
                reason = error.description
            } catch {
                reason = "\(error)"
            }
            if isClosed || Task.isCancelled { break }
            let delay = configuration.backoff.delay(attempt: attempt)
            attempt += 1
            index += 1
            stateSink.yield(.disconnected(reason: reason, retryIn: delay))
            try? await Task.sleep(for: delay)
        }
        inner.withLock { $0.closed = true }
        stateSink.yield(.closed)
        stateSink.finish()
        messageSink.finish()
    }

    /// Closes for good.
    public func close() async {
        let (client, task) = inner.withLock { inner in
            inner.closed = true
            return (inner.client, inner.task)
        }
        task?.cancel()
        await client?.close()
        await task?.value
    }

    /// Sends a business packet (comet forwards it to logic's `Receive`). False when not connected.
    @discardableResult
    public func send(operation: Int32, body: [UInt8] = []) -> Bool {
        write(GoIMProtocol.Operation(operation), body)
    }

    /// Changes room (op 12). With recovery, coming back to a room this session was in gets what was pushed to it
    /// meanwhile; `states` reports `.roomChanged` when the comet answers.
    @discardableResult
    public func changeRoom(_ room: String) -> Bool {
        let position: (epoch: String, offset: UInt64) = inner.withLock { $0.positions[room] } ?? (epoch: "", offset: 0)
        let body: [UInt8]
        if configuration.recover {
            let json: [String: Any] = ["room": room, "recover": ["epoch": position.epoch, "offset": position.offset]]
            body = Array((try? JSONSerialization.data(withJSONObject: json)) ?? Data())
        } else {
            body = Array(room.utf8)
        }
        guard write(.changeRoom, body) else { return false }
        inner.withLock { $0.changing = (room, position.epoch, position.offset) }
        return true
    }

    /// Adds operations to the watch set (op 14).
    @discardableResult
    public func subscribe(_ operations: [Int32]) -> Bool {
        write(.sub, Array(operations.map(String.init).joined(separator: ",").utf8))
    }

    /// Removes operations from the watch set (op 16).
    @discardableResult
    public func unsubscribe(_ operations: [Int32]) -> Bool {
        write(.unsub, Array(operations.map(String.init).joined(separator: ",").utf8))
    }

    // MARK: - one connection

    private var isClosed: Bool { inner.withLock { $0.closed } }

    private func serve(_ endpoint: GoIMEndpoint, authenticated: () -> Void) async throws {
        let transport: GoIMClient.Transport
        switch endpoint.scheme {
        case .tcp: transport = .tcp
        case .ws: transport = .webSocket(path: endpoint.path)
        case .wss: transport = .webSocketTLS(path: endpoint.path, context: tls!, serverHostname: endpoint.host)
        }
        let client = try await GoIMClient.connect(
            host: endpoint.host, port: endpoint.port, transport: transport, eventLoopGroup: configuration.eventLoopGroup,
            connectTimeout: TimeAmount(configuration.connectTimeout))
        let stillOpen = inner.withLock { inner in
            inner.changing = nil  // a change without its reply died with the connection: the auth names the room we are in
            inner.client = inner.closed ? nil : client
            return !inner.closed
        }
        do {
            guard stillOpen else { throw GoIMKitError.closed }
            let reply = try await client.auth(token: ByteBuffer(bytes: authBody()), timeout: max(configuration.heartbeat, .seconds(5)))
            authenticated()
            stateSink.yield(.connected(endpoint, standing: standing(reply.body)))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await self.heartbeats(client) }
                group.addTask {
                    for await received in client.packets { self.handle(received.packet) }
                    throw GoIMKitError.connectionClosed
                }
                try await group.next()
                group.cancelAll()
            }
        } catch {
            inner.withLock { if $0.client === client { $0.client = nil } }
            await client.close()
            throw error
        }
    }

    /// op 2 every interval; no op 3 within the interval means the connection is dead (a NAT dropped it, the comet
    /// hangs): detected at most one interval after the heartbeat that went unanswered.
    private func heartbeats(_ client: GoIMClient) async throws {
        let interval = configuration.heartbeat
        while true {
            let sent = ContinuousClock.now
            do {
                let online = try await client.heartbeat(sequence: nextSequence(), timeout: interval)
                inner.withLock { $0.online = online }
            } catch GoIMClientError.timeout {
                throw GoIMKitError.missedHeartbeat
            } catch GoIMClientError.closed {
                throw GoIMKitError.connectionClosed
            }
            try await Task.sleep(until: sent + interval)
        }
    }

    private func authBody() -> [UInt8] {
        switch configuration.credentials {
        case .token(let bytes):
            return bytes
        case .authBody(let body):
            var object = ((try? JSONSerialization.jsonObject(with: Data(body.encoded()))) as? [String: Any]) ?? [:]
            let (room, epoch, offset, user) = inner.withLock { ($0.room, $0.epoch, $0.lastOffset, ($0.userEpoch, $0.userOffset)) }
            object["room_id"] = room
            if configuration.recover || configuration.recoverUser {
                var recover: [String: Any] = configuration.recover ? ["epoch": epoch, "offset": offset] : ["epoch": "", "offset": 0]
                if configuration.recoverUser { recover["mid"] = ["epoch": user.0, "offset": user.1] }
                object["recover"] = recover
            }
            return Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data(body.encoded()))
        }
    }

    private func handle(_ packet: Packet) {
        switch packet.operation {
        case .heartbeatReply, .authReply:
            return
        case .changeRoomReply:
            let switched = inner.withLock { inner -> String? in
                guard let changing = inner.changing else { return nil }
                if !inner.room.isEmpty { inner.positions[inner.room] = (inner.epoch, inner.lastOffset) }
                (inner.room, inner.epoch, inner.lastOffset) = (changing.room, changing.epoch, changing.offset)
                inner.changing = nil
                return changing.room
            }
            let standing = standing(packet.body)
            if let room = standing?.room ?? switched { stateSink.yield(.roomChanged(room: room, standing: standing)) }
            deliver(packet, offset: 0)
        default:
            // A room message of a room with history carries its offset in seq (> 0), a push to this client's user
            // with history minus its offset (< 0); other pushes have 0.
            let stream: GoIMStream = packet.sequence > 0 ? .room : packet.sequence < 0 ? .user : .none
            let offset = UInt64(packet.sequence.magnitude)
            if stream != .none {
                let fresh = inner.withLock { inner in
                    // Already delivered (recovered, then live): dropped.
                    if stream == .room {
                        guard offset > inner.lastOffset else { return false }
                        inner.lastOffset = offset
                    } else {
                        guard offset > inner.userOffset else { return false }
                        inner.userOffset = offset
                    }
                    return true
                }
                guard fresh else { return }
            }
            deliver(packet, offset: offset, stream: stream)
        }
    }

    private func deliver(_ packet: Packet, offset: UInt64, stream: GoIMStream = .none) {
        let room = inner.withLock { $0.room }
        messageSink.yield(
            GoIMMessage(
                operation: packet.operation.rawValue, body: Array(packet.body.readableBytesView), room: room, offset: offset,
                stream: stream))
    }

    /// op 8 / op 13 of a server with history: `{"room","epoch","offset","recovering","recovered"}`. goim's op 8 is empty.
    private func standing(_ body: ByteBuffer) -> GoIMStanding? {
        guard body.readableBytesView.first == UInt8(ascii: "{"),
            let object = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any],
            let epoch = object["epoch"] as? String
        else { return nil }
        let offset = (object["offset"] as? NSNumber)?.uint64Value ?? 0
        let room = (object["room"] as? String) ?? ""
        var standing = GoIMStanding(
            room: room, epoch: epoch, offset: offset, recovering: object["recovering"] as? Bool ?? false,
            recovered: object["recovered"] as? Bool ?? false)
        if let user = object["mid"] as? [String: Any], let userEpoch = user["epoch"] as? String {
            standing.user = GoIMUserStanding(
                epoch: userEpoch, offset: (user["offset"] as? NSNumber)?.uint64Value ?? 0,
                recovering: user["recovering"] as? Bool ?? false, recovered: user["recovered"] as? Bool ?? false)
        }
        inner.withLock { inner in
            // An empty epoch from a server with history means it could not read the room's history this time
            // (`recovered` is false): keep the position, so that the next reconnect recovers from where this
            // session really is instead of from the start of the history (every message again).
            if !epoch.isEmpty, epoch != inner.epoch {
                // Another epoch (a first connect, or the room's history started again): its offsets start anew.
                inner.epoch = epoch
                inner.lastOffset = 0
            }
            if !room.isEmpty { inner.room = room }
            if let user = standing.user, !user.epoch.isEmpty, user.epoch != inner.userEpoch {  // the same for the user's stream
                inner.userEpoch = user.epoch
                inner.userOffset = 0
            }
        }
        return standing
    }

    private func nextSequence() -> Int32 {
        inner.withLock { inner in
            inner.sequence = inner.sequence == Int32.max ? 1 : inner.sequence + 1
            return inner.sequence
        }
    }

    private func write(_ operation: GoIMProtocol.Operation, _ body: [UInt8]) -> Bool {
        guard let client = inner.withLock({ $0.client }), client.isActive else { return false }
        client.sendAndForget(Packet(operation: operation, sequence: nextSequence(), body: ByteBuffer(bytes: body)))
        return true
    }
}
