import Foundation
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
}
