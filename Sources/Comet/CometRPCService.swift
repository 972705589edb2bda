import GRPCCore
import GoIMRPC
import NIOCore

/// `goim.comet.Comet`, the service Job (and goim's job) drives. Each push is encoded once per transport here, then
/// handed to the event loops. Every push returns once the loops have written it (goim returned at once, after a
/// non-blocking enqueue), so job's ack means "handed to the sockets", and job batches a busy room while its
/// `BroadcastRoom` is in flight. A paced `Broadcast` (speed > 0) returns once scheduled.
struct CometRPCService: Goim_Comet_Comet.SimpleServiceProtocol {
    let comet: Comet

    func pushMsg(request: Goim_Comet_PushMsgReq, context: ServerContext) async throws -> Goim_Comet_PushMsgReply {
        guard !request.keys.isEmpty, request.hasProto else {
            throw RPCError(code: .unknown, message: "rpc pushmsg arg error")
        }
        comet.counters.increment(\.rpcPushMsg)
        await comet.push(keys: request.keys, operation: request.protoOp, push: Push(proto: request.proto))
        return Goim_Comet_PushMsgReply()
    }

    func broadcast(request: Goim_Comet_BroadcastReq, context: ServerContext) async throws -> Goim_Comet_BroadcastReply {
        guard request.hasProto else {
            throw RPCError(code: .unknown, message: "rpc broadcast arg error")
        }
        comet.counters.increment(\.rpcBroadcast)
        await comet.broadcast(operation: request.protoOp, push: Push(proto: request.proto), speed: request.speed)
        return Goim_Comet_BroadcastReply()
    }

    func broadcastRoom(request: Goim_Comet_BroadcastRoomReq, context: ServerContext) async throws
        -> Goim_Comet_BroadcastRoomReply
    {
        guard !request.roomID.isEmpty, request.hasProto else {
            // Two spaces, as goim's message has them.
            throw RPCError(code: .unknown, message: "rpc broadcast  room arg error")
        }
        comet.counters.increment(\.rpcBroadcastRoom)
        if request.historyEpoch.isEmpty {
            await comet.broadcastRoom(request.roomID, push: Push(proto: request.proto))
        } else {
            await comet.broadcastRoom(request.roomID, epoch: request.historyEpoch, proto: request.proto)
        }
        return Goim_Comet_BroadcastRoomReply()
    }

    func rooms(request: Goim_Comet_RoomsReq, context: ServerContext) async throws -> Goim_Comet_RoomsReply {
        var reply = Goim_Comet_RoomsReply()
        for id in comet.rooms.counts().keys { reply.rooms[id] = true }
        return reply
    }
}

/// `swiftgoim.comet.Users` (swift-goim's own service, Protos/users.proto): pushes to users whose pushes keep history
/// (`history.mids`), sent by job to every comet. Returns once the loops have written it, as `PushMsg`.
struct UsersRPCService: Swiftgoim_Comet_Users.SimpleServiceProtocol {
    let comet: Comet

    func push(request: Swiftgoim_Comet_UserPushReq, context: ServerContext) async throws -> Swiftgoim_Comet_UserPushReply {
        comet.counters.increment(\.rpcPushUsers)
        await comet.pushUsers(operation: request.op, body: request.body, users: request.users)
        return Swiftgoim_Comet_UserPushReply()
    }
}
