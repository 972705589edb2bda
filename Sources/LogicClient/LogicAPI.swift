import Foundation
import GRPCCore
import GoIMRPC

/// The calls a comet makes to Logic (`goim.logic.Logic`). `GRPCLogicClient` is the real one; the seam lets other
/// transports or in-process Logic implementations be plugged in.
public protocol LogicAPI: Sendable {
    /// Authenticates a connection: `token` is the op 7 body unchanged, `cookie` the WebSocket Cookie header.
    func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply
    func disconnect(mid: Int64, key: String, server: String) async throws
    /// Refreshes the session in Logic's routing store.
    func heartbeat(mid: Int64, key: String, server: String) async throws
    /// Reports this comet's room counts; returns the cluster-wide counts of all rooms.
    func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32]
    /// Verifies a connection's fresh token (op 18, `swiftgoim.logic.Session`); returns when it expires (Unix seconds,
    /// 0 = never). goim's logic answers UNIMPLEMENTED.
    func refreshToken(mid: Int64, key: String, server: String, token: Data) async throws -> Int64
    /// Forwards a client packet with an operation the comet does not handle itself.
    func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws
    /// Room `room`'s history after offset `since` of `epoch` (`swiftgoim.logic.History`), at most `limit` messages:
    /// what a recovering client missed. goim's logic answers UNIMPLEMENTED.
    func roomHistory(room: String, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply
    /// The same for the pushes addressed to user `mid` (`history.mids`). goim's logic answers UNIMPLEMENTED.
    func midHistory(mid: Int64, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply
}

extension LogicAPI {
    /// A Logic without history (goim's): UNIMPLEMENTED, as its gRPC server answers.
    public func roomHistory(room: String, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply {
        throw RPCError(code: .unimplemented, message: "swiftgoim.logic.History is not served by this Logic")
    }

    public func midHistory(mid: Int64, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply {
        throw RPCError(code: .unimplemented, message: "swiftgoim.logic.History is not served by this Logic")
    }
}
