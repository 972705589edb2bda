import Foundation
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import Logging
import Primitives

/// Logic's operations, shared by the gRPC service (comets) and the HTTP API (applications). Everything it
/// touches sits behind a protocol: `RoutingStore` / `OnlineStore` (Redis), `PushQueue` (NATS JetStream),
/// `Authenticator` (goim body or JWT) and `ClusterState` (registry + balancer + room counts).
public struct LogicCore: Sendable {
    public let routing: any RoutingStore
    public let online: any OnlineStore
    public let queue: any PushQueue
    public let authenticator: any Authenticator
    public let cluster: ClusterState
    /// `node.heartbeat × node.heartbeatMax`: the idle timeout handed to comets in `ConnectReply`.
    public let sessionHeartbeat: Duration
    let logger: Logger

    /// Publishes waiting for their queue's ack at once; more are refused at once (`LogicError.queueOverloaded`), so a
    /// slow or absent NATS costs bounded memory instead of a growing pile of waiting requests.
    let maxPendingPublishes: Int
    private let publishSlots: AsyncSemaphore
    /// goim mode without `auth.allowKeyTakeover`: a chosen key connected for another member is refused.
    let checksChosenKeys: Bool
    /// `history.mids` is set: a push to users goes to their histories and every comet, not to their sessions' comets.
    let usersKeepHistory: Bool

    public init(
        routing: any RoutingStore, online: any OnlineStore, queue: any PushQueue, authenticator: any Authenticator,
        cluster: ClusterState, sessionHeartbeat: Duration, logger: Logger, maxPendingPublishes: Int = 4096,
        allowKeyTakeover: Bool = false, usersKeepHistory: Bool = false
    ) {
        self.usersKeepHistory = usersKeepHistory
        self.checksChosenKeys = authenticator.identityIsClaimed && !allowKeyTakeover
        self.maxPendingPublishes = maxPendingPublishes
        self.publishSlots = AsyncSemaphore(permits: maxPendingPublishes)
        self.routing = routing
        self.online = online
        self.queue = queue
        self.authenticator = authenticator
        self.cluster = cluster
        self.sessionHeartbeat = sessionHeartbeat
        self.logger = logger
    }

    // MARK: - Sessions (gRPC from comets)

    /// Authenticates the auth body and stores the routing. As in goim, a Redis failure here is only logged:
    /// the client still connects (it gets room messages and broadcasts; key/mid pushes find it after its
    /// next session refresh).
    public func connect(server: String, cookie: String, token: [UInt8]) async throws -> Credential {
        try await connect([ConnectRequest(server: server, cookie: cookie, token: token)])[0].get()
    }

    /// Authenticates each request, then stores every accepted session in one round trip. A failed store is logged
    /// and the connections are still accepted (goim's behaviour: the session is re-created by the next Heartbeat).
    /// One result per request, in order.
    ///
    /// When the auth body only claims its user (goim mode), a key the client chose that is already connected for
    /// another member is refused (`keyConflict`): goim let anyone kick a connection by naming its key.
    public func connect(_ requests: [ConnectRequest]) async -> [Result<Credential, any Error>] {
        var results: [Result<Credential, any Error>] = []
        results.reserveCapacity(requests.count)
        var chosenKeys: [(result: Int, session: Session)] = []
        for request in requests {
            do {
                guard !request.server.isEmpty else { throw LogicError.badParameter(parameter: "server", reason: "required") }
                var credential = try await authenticator.authenticate(token: request.token, cookie: request.cookie)
                if credential.body.key.isEmpty {
                    credential.body.key = UUID().uuidString.lowercased()
                } else if checksChosenKeys {
                    chosenKeys.append((results.count, Session(mid: credential.body.mid, key: credential.body.key, server: request.server)))
                }
                results.append(.success(credential))
            } catch {
                results.append(.failure(error))
            }
        }
        if !chosenKeys.isEmpty { await refuseKeyConflicts(chosenKeys, in: &results) }
        var sessions: [Session] = []
        sessions.reserveCapacity(requests.count)
        for (request, result) in zip(requests, results) {
            guard case .success(let credential) = result else { continue }
            sessions.append(Session(mid: credential.body.mid, key: credential.body.key, server: request.server))
        }
        do {
            try await routing.addMappings(sessions)
        } catch {
            logger.warning(
                "connect: storing the session failed",
                metadata: ["goim.sessions": "\(sessions.count)", "goim.firstKey": "\(sessions.first?.key ?? "")", "error": "\(error)"])
        }
        if logger.logLevel <= .debug {
            for session in sessions {
                logger.debug(
                    "connected", metadata: ["goim.mid": "\(session.mid)", "goim.key": "\(session.key)", "goim.server": "\(session.server)"])
            }
        }
        return results
    }

    /// Turns into failures the results whose chosen key is connected for another member. If Redis cannot answer,
    /// the connections are let in (goim's behaviour, as for the store itself) and the failure is logged.
    private func refuseKeyConflicts(_ chosen: [(result: Int, session: Session)], in results: inout [Result<Credential, any Error>]) async {
        let held: [Bool]
        do {
            held = try await routing.keysHeldByOthers(chosen.map(\.session))
        } catch {
            logger.warning("connect: checking chosen keys failed; letting the connections in", metadata: ["error": "\(error)"])
            return
        }
        for (item, isHeld) in zip(chosen, held) where isHeld {
            results[item.result] = .failure(LogicError.keyConflict(key: item.session.key, mid: item.session.mid))
        }
    }

    /// Verifies a fresh token for a connection that is open (op 18). The token must name the same member (and the same
    /// key, when it names one); returns when the new token expires (Unix seconds; 0 = never).
    public func refreshToken(mid: Int64, key: String, server: String, token: [UInt8]) async throws -> Int64 {
        let credential = try await authenticator.authenticate(token: token, cookie: "")
        guard credential.body.mid == mid else {
            throw LogicError.authenticationFailed("the new token is for member \(credential.body.mid), the connection is member \(mid)")
        }
        guard credential.body.key.isEmpty || credential.body.key == key else {
            throw LogicError.authenticationFailed("the new token names key \"\(credential.body.key)\", the connection is \"\(key)\"")
        }
        return credential.expiresAt
    }

    /// Removes many sessions in one round trip (a batched Disconnect); whether each `key_<key>` was removed.
    public func disconnect(_ sessions: [Session]) async throws -> [Bool] {
        try await routing.deleteMappings(sessions)
    }

    public func disconnect(mid: Int64, key: String, server: String) async throws -> Bool {
        try await routing.deleteMapping(mid: mid, key: key, server: server)
    }

    public func heartbeat(mid: Int64, key: String, server: String) async throws {
        try await routing.refreshMapping(mid: mid, key: key, server: server)
    }

    /// Stores the comet's room counts and answers the cluster-wide counts (as last recomputed).
    public func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32] {
        guard !server.isEmpty else { throw LogicError.badParameter(parameter: "server", reason: "required") }
        let updated = Int64(Date().timeIntervalSince1970)
        try await online.storeOnline(ServerOnline(server: server, roomCount: roomCount, updated: updated))
        return cluster.roomCount
    }

    /// An upstream client message: published for the application on `nats.receiveSubject`.
    public func receive(_ request: Goim_Logic_ReceiveReq) async throws {
        try await queue.publishUpstream(request)
    }

    // MARK: - Pushes (HTTP from applications)

    /// Each push is published with a message id: `idempotencyKey` (an HTTP `Idempotency-Key`) when the caller sent one,
    /// a fresh UUID otherwise, plus the route (and the comet, for key and mid pushes). A caller retrying with the same
    /// key within `nats.duplicateWindow` gets its push delivered once.
    static func messageID(_ idempotencyKey: String?, _ parts: String...) -> String {
        ([idempotencyKey ?? UUID().uuidString] + parts).joined(separator: "/")
    }

    /// Looks up each key's comet (one MGET), then one PUSH message per comet. Unknown keys are skipped.
    public func pushKeys(operation: Int32, keys: [String], message: Data, idempotencyKey: String? = nil) async throws {
        var unique: [String] = []
        var seen: Set<String> = []
        for key in keys where !key.isEmpty && seen.insert(key).inserted { unique.append(key) }
        let servers = try await routing.servers(forKeys: unique)
        var groups: [(server: String, keys: [String])] = []
        var index: [String: Int] = [:]
        for (key, server) in zip(unique, servers) {
            guard let server else { continue }
            if let position = index[server] {
                groups[position].keys.append(key)
            } else {
                index[server] = groups.count
                groups.append((server, [key]))
            }
        }
        try await publish(groups: groups, operation: operation, message: message, id: Self.messageID(idempotencyKey, "keys"))
    }

    /// Looks up every session of the members (one pipelined HGETALL), then one PUSH message per comet. With user
    /// history (`history.mids`), one PUSH message naming the members instead: job writes it to each one's history
    /// (offline members too) and every comet delivers it to the members' connections it holds, in offset order.
    public func pushMids(operation: Int32, mids: [Int64], message: Data, idempotencyKey: String? = nil) async throws {
        var unique: [Int64] = []
        var seen: Set<Int64> = []
        for mid in mids where seen.insert(mid).inserted { unique.append(mid) }
        if usersKeepHistory {
            var push = Goim_Logic_PushMsg()
            push.type = .push
            push.operation = operation
            push.mids = unique
            push.msg = message
            try await publish(push, id: Self.messageID(idempotencyKey, "mids"))
            return
        }
        let sessions = try await routing.sessions(forMids: unique)
        var groups: [(server: String, keys: [String])] = []
        var index: [String: Int] = [:]
        var seenKeys: Set<String> = []
        for session in sessions where seenKeys.insert(session.key).inserted {
            if let position = index[session.server] {
                groups[position].keys.append(session.key)
            } else {
                index[session.server] = groups.count
                groups.append((session.server, [session.key]))
            }
        }
        try await publish(groups: groups, operation: operation, message: message, id: Self.messageID(idempotencyKey, "mids"))
    }

    /// One ROOM message for `<type>://<room>`.
    public func pushRoom(
        operation: Int32, type: String, room: String, message: Data, idempotencyKey: String? = nil
    ) async throws {
        var push = Goim_Logic_PushMsg()
        push.type = .room
        push.operation = operation
        push.room = Self.roomKey(type: type, room: room)
        push.msg = message
        try await publish(push, id: Self.messageID(idempotencyKey, "room"))
    }

    /// One BROADCAST message.
    public func pushAll(operation: Int32, speed: Int32, message: Data, idempotencyKey: String? = nil) async throws {
        var push = Goim_Logic_PushMsg()
        push.type = .broadcast
        push.operation = operation
        push.speed = speed
        push.msg = message
        try await publish(push, id: Self.messageID(idempotencyKey, "all"))
    }

    /// Publishes one PUSH message per comet, all at once, and returns when every one was acknowledged.
    /// Failures are collected: the error names the comets whose group was not queued.
    /// `id` is the push's message id; each comet's message adds the comet's name to it.
    func publish(groups: [(server: String, keys: [String])], operation: Int32, message: Data, id: String) async throws {
        let messages = groups.map { group -> Goim_Logic_PushMsg in
            var push = Goim_Logic_PushMsg()
            push.type = .push
            push.operation = operation
            push.server = group.server
            push.keys = group.keys
            push.msg = message
            return push
        }
        switch messages.count {
        case 0: return
        case 1: try await publish(messages[0], id: "\(id)/\(messages[0].server)")
        default:
            let failures = await withTaskGroup(of: (String, String)?.self) { group in
                for push in messages {
                    group.addTask {
                        do {
                            try await self.publish(push, id: "\(id)/\(push.server)")
                            return nil
                        } catch {
                            return (push.server, (error as? LogicError)?.message ?? "\(error)")
                        }
                    }
                }
                var failures: [(String, String)] = []
                for await failure in group {
                    if let failure { failures.append(failure) }
                }
                return failures.sorted { $0.0 < $1.0 }
            }
            guard let first = failures.first else { return }
            if failures.count == messages.count { throw LogicError.queueUnavailable(Self.stripPrefix(first.1)) }
            throw LogicError.partialPush(failed: failures.map(\.0), reason: Self.stripPrefix(first.1))
        }
    }

    /// One publish, counted against `maxPendingPublishes`.
    private func publish(_ push: Goim_Logic_PushMsg, id: String) async throws {
        guard publishSlots.tryAcquire(upTo: 1) == 1 else { throw LogicError.queueOverloaded(limit: maxPendingPublishes) }
        defer { publishSlots.release() }
        try await queue.publish(push, id: id)
    }

    private static func stripPrefix(_ message: String) -> String {
        let prefix = "nats unavailable: "
        return message.hasPrefix(prefix) ? String(message.dropFirst(prefix.count)) : message
    }

    /// goim's room key: `<type>://<room>`.
    public static func roomKey(type: String, room: String) -> String { "\(type)://\(room)" }

    // MARK: - Online counts and nodes (HTTP)

    /// `/goim/online/top`: rooms of `type` (room keys starting with exactly `<type>://`, goim bug 26), by
    /// count, highest first (ties by room id), at most `limit`.
    public func onlineTop(type: String, limit: Int) -> [(roomID: String, count: Int32)] {
        let prefix = "\(type)://"
        var tops: [(roomID: String, count: Int32)] = []
        for (key, count) in cluster.roomCount where key.hasPrefix(prefix) {
            tops.append((Self.roomID(fromKey: key, prefixLength: prefix.count), count))
        }
        tops.sort { ($0.count, $1.roomID) > ($1.count, $0.roomID) }
        return Array(tops.prefix(max(0, limit)))
    }

    /// The host part of a room key as Go's `url.Parse(key).Host` gives it for goim's room keys.
    static func roomID(fromKey key: String, prefixLength: Int) -> String {
        var rest = key.dropFirst(prefixLength)
        if let end = rest.firstIndex(where: { "/?#".contains($0) }) { rest = rest[..<end] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        return String(rest)
    }

    /// `/goim/online/room`: each room's cluster-wide count (0 when unknown).
    public func onlineRoom(type: String, rooms: [String]) -> [String: Int32] {
        let counts = cluster.roomCount
        var result: [String: Int32] = [:]
        for room in rooms { result[room] = counts[Self.roomKey(type: type, room: room)] ?? 0 }
        return result
    }
}

/// One `Connect` call: the comet asking, the WebSocket cookie and the op 7 body unchanged.
public struct ConnectRequest: Sendable {
    public var server: String
    public var cookie: String
    public var token: [UInt8]

    public init(server: String, cookie: String, token: [UInt8]) {
        self.server = server
        self.cookie = cookie
        self.token = token
    }
}
