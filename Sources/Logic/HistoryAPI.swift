import Foundation
import GRPCCore
import GoIMConfig
import GoIMRPC
import History
import Logging

/// Reads room and user history for logic's HTTP routes and its `swiftgoim.logic.History` service (which comets call
/// when a client recovers). Only room types in `[history] rooms`, and users when `[history] mids` is set, have history;
/// logic never writes it (job does).
public struct LogicHistory: Sendable {
    let policy: HistorySection
    let store: HistoryStore

    public init(policy: HistorySection, store: HistoryStore) {
        self.policy = policy
        self.store = store
    }

    /// What came after offset `since` of `epoch` in room `room`; `limit` is capped by `history.maxRead`.
    func room(_ room: String, since: UInt64, epoch: String, limit: Int) async throws(LogicError) -> Swiftgoim_Logic_HistoryReply {
        try await read(.room(room), limits: policy.limits(forRoom: room), since: since, epoch: epoch, limit: limit)
    }

    /// What came after offset `since` of `epoch` in the pushes addressed to user `mid` (`history.mids`).
    func mid(_ mid: Int64, since: UInt64, epoch: String, limit: Int) async throws(LogicError) -> Swiftgoim_Logic_HistoryReply {
        try await read(.mid(mid), limits: policy.mids, since: since, epoch: epoch, limit: limit)
    }

    private func read(
        _ stream: HistoryStream, limits: HistoryLimits?, since: UInt64, epoch: String, limit: Int
    ) async throws(LogicError) -> Swiftgoim_Logic_HistoryReply {
        var reply = Swiftgoim_Logic_HistoryReply()
        guard let limits else { return reply }
        reply.enabled = true
        let page: HistoryPage
        do {
            page = try await store.read(
                stream, since: since, epoch: epoch, limit: min(max(0, limit), policy.maxRead), startingWith: limits)
        } catch {
            throw .redisUnavailable("\(error)")
        }
        reply.epoch = page.epoch
        reply.top = page.top
        reply.first = page.first
        reply.complete = page.complete
        reply.messages = page.messages.map { message in
            .with {
                $0.offset = message.offset
                $0.op = message.operation
                $0.body = Data(message.body.readableBytesView)
            }
        }
        return reply
    }
}

/// `swiftgoim.logic.History` (swift-goim's own service, Protos/history.proto).
public struct HistoryRPCService: Swiftgoim_Logic_History.SimpleServiceProtocol {
    let history: LogicHistory
    let logger: Logger

    public init(history: LogicHistory, logger: Logger) {
        self.history = history
        self.logger = logger
    }

    public func room(request: Swiftgoim_Logic_RoomHistoryReq, context: ServerContext) async throws -> Swiftgoim_Logic_HistoryReply {
        guard !request.room.isEmpty else { throw RPCError(code: .invalidArgument, message: "room: required") }
        do {
            return try await history.room(request.room, since: request.since, epoch: request.epoch, limit: Int(request.limit))
        } catch {
            throw LogicRPCService.rpcError(error, method: "History.Room", logger: logger)
        }
    }

    public func mid(request: Swiftgoim_Logic_MidHistoryReq, context: ServerContext) async throws -> Swiftgoim_Logic_HistoryReply {
        do {
            return try await history.mid(request.mid, since: request.since, epoch: request.epoch, limit: Int(request.limit))
        } catch {
            throw LogicRPCService.rpcError(error, method: "History.Mid", logger: logger)
        }
    }
}
