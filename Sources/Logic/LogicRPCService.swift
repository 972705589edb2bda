import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMRPC
import Logging
import ServiceLifecycle

/// `goim.logic.Logic`, the service comets call (reference §4.1–4.2).
public struct LogicRPCService: Goim_Logic_Logic.SimpleServiceProtocol {
    let core: LogicCore
    let logger: Logger

    public init(core: LogicCore, logger: Logger) {
        self.core = core
        self.logger = logger
    }

    public func connect(request: Goim_Logic_ConnectReq, context: ServerContext) async throws -> Goim_Logic_ConnectReply {
        let credential = try await rpc("Connect") {
            try await core.connect(server: request.server, cookie: request.cookie, token: [UInt8](request.token))
        }
        return Self.reply(credential, heartbeat: Self.nanoseconds(core.sessionHeartbeat))
    }

    static func reply(_ credential: Credential, heartbeat: Int64) -> Goim_Logic_ConnectReply {
        var reply = Goim_Logic_ConnectReply()
        reply.mid = credential.body.mid
        reply.key = credential.body.key
        reply.roomID = credential.body.roomID
        reply.accepts = credential.body.accepts
        reply.heartbeat = heartbeat
        reply.expiresAt = credential.expiresAt
        return reply
    }

    public func disconnect(request: Goim_Logic_DisconnectReq, context: ServerContext) async throws -> Goim_Logic_DisconnectReply {
        var reply = Goim_Logic_DisconnectReply()
        reply.has = try await rpc("Disconnect") {
            try await core.disconnect(mid: request.mid, key: request.key, server: request.server)
        }
        return reply
    }

    public func heartbeat(request: Goim_Logic_HeartbeatReq, context: ServerContext) async throws -> Goim_Logic_HeartbeatReply {
        try await rpc("Heartbeat") {
            try await core.heartbeat(mid: request.mid, key: request.key, server: request.server)
        }
        return Goim_Logic_HeartbeatReply()
    }

    public func renewOnline(request: Goim_Logic_OnlineReq, context: ServerContext) async throws -> Goim_Logic_OnlineReply {
        var reply = Goim_Logic_OnlineReply()
        reply.allRoomCount = try await rpc("RenewOnline") {
            try await core.renewOnline(server: request.server, roomCount: request.roomCount)
        }
        return reply
    }

    public func receive(request: Goim_Logic_ReceiveReq, context: ServerContext) async throws -> Goim_Logic_ReceiveReply {
        try await rpc("Receive") { try await core.receive(request) }
        return Goim_Logic_ReceiveReply()
    }

    public func nodes(request: Goim_Logic_NodesReq, context: ServerContext) async throws -> Goim_Logic_NodesReply {
        core.cluster.nodes(platform: request.platform, clientIP: request.clientIp)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// Runs `body`, turning a `LogicError` into the matching `RPCError` (and logging server-side failures).
    private func rpc<T: Sendable>(_ method: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw Self.rpcError(error, method: method, logger: logger)
        }
    }

    /// The `RPCError` a failed call answers: `LogicError`s get their matching status (server-side failures are
    /// logged), anything else passes through (grpc-swift turns a non-RPCError into UNKNOWN).
    static func rpcError(_ error: any Error, method: String, logger: Logger) -> any Error {
        guard let error = error as? LogicError else { return error }
        let code: RPCError.Code
        switch error {
        case .authenticationFailed, .unauthorized: code = .unauthenticated
        case .keyConflict: code = .alreadyExists
        case .badParameter, .bodyTooLarge, .bodyUnreadable: code = .invalidArgument
        case .redisUnavailable, .queueUnavailable, .partialPush: code = .unavailable
        case .queueOverloaded: code = .resourceExhausted
        }
        if code == .unavailable {
            logger.warning("\(method) failed", metadata: ["error": "\(error.message)"])
        }
        return RPCError(code: code, message: error.message)
    }
}

/// `swiftgoim.logic.LogicBatch`: swift-goim comets send the Connects (and Disconnects) of connections arriving
/// together in one call. Each item gets the reply or the status its single call would have had.
public struct LogicBatchRPCService: Swiftgoim_Logic_LogicBatch.SimpleServiceProtocol {
    let core: LogicCore
    let logger: Logger
    /// Items per call: a larger request is refused whole (a comet sends at most its `rpcClient.batchSize`).
    public static let maxItems = 4096

    public init(core: LogicCore, logger: Logger) {
        self.core = core
        self.logger = logger
    }

    public func connectBatch(request: Swiftgoim_Logic_ConnectBatchReq, context: ServerContext) async throws
        -> Swiftgoim_Logic_ConnectBatchReply
    {
        try Self.checkSize(request.requests.count)
        let results = await core.connect(
            request.requests.map { ConnectRequest(server: $0.server, cookie: $0.cookie, token: [UInt8]($0.token)) })
        let heartbeat = LogicRPCService.nanoseconds(core.sessionHeartbeat)
        var reply = Swiftgoim_Logic_ConnectBatchReply()
        reply.results = results.map { result in
            var item = Swiftgoim_Logic_ConnectResult()
            switch result {
            case .success(let credential):
                item.reply = LogicRPCService.reply(credential, heartbeat: heartbeat)
            case .failure(let error):
                item.status = Self.status(LogicRPCService.rpcError(error, method: "ConnectBatch", logger: logger))
            }
            return item
        }
        return reply
    }

    public func disconnectBatch(request: Swiftgoim_Logic_DisconnectBatchReq, context: ServerContext) async throws
        -> Swiftgoim_Logic_DisconnectBatchReply
    {
        try Self.checkSize(request.requests.count)
        var reply = Swiftgoim_Logic_DisconnectBatchReply()
        do {
            let removed = try await core.disconnect(request.requests.map { Session(mid: $0.mid, key: $0.key, server: $0.server) })
            reply.results = removed.map { has in
                var item = Swiftgoim_Logic_DisconnectResult()
                item.reply.has = has
                return item
            }
        } catch {
            // The store failed for the whole pipeline: every item gets the status a single call would have.
            let status = Self.status(LogicRPCService.rpcError(error, method: "DisconnectBatch", logger: logger))
            reply.results = request.requests.map { _ in
                var item = Swiftgoim_Logic_DisconnectResult()
                item.status = status
                return item
            }
        }
        return reply
    }

    private static func checkSize(_ count: Int) throws {
        guard count <= maxItems else {
            throw RPCError(code: .invalidArgument, message: "batch of \(count) calls, at most \(maxItems) allowed")
        }
    }

    static func status(_ error: any Error) -> Swiftgoim_Logic_CallStatus {
        var status = Swiftgoim_Logic_CallStatus()
        if let error = error as? RPCError {
            status.code = Int32(error.code.rawValue)
            status.message = error.message
        } else {
            status.code = Int32(RPCError.Code.unknown.rawValue)
            status.message = "\(error)"
        }
        return status
    }
}

/// `swiftgoim.logic.Session`: a comet verifies the fresh token a client sent in op 18 (`auth.mode = "jwt"`).
public struct SessionRPCService: Swiftgoim_Logic_Session.SimpleServiceProtocol {
    let core: LogicCore
    let logger: Logger

    public init(core: LogicCore, logger: Logger) {
        self.core = core
        self.logger = logger
    }

    public func refreshToken(request: Swiftgoim_Logic_RefreshTokenReq, context: ServerContext) async throws
        -> Swiftgoim_Logic_RefreshTokenReply
    {
        do {
            var reply = Swiftgoim_Logic_RefreshTokenReply()
            reply.expiresAt = try await core.refreshToken(
                mid: request.mid, key: request.key, server: request.server, token: [UInt8](request.token))
            return reply
        } catch {
            throw LogicRPCService.rpcError(error, method: "RefreshToken", logger: logger)
        }
    }
}
