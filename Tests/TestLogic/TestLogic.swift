import Foundation
import GRPCCore
import GoIMProtocol
import GoIMRPC
import Synchronization

/// A small real `goim.logic.Logic` gRPC service for the comet's tests: it decodes auth bodies with `AuthBody`
/// (as Logic does), records every call, and lets tests await calls instead of sleeping.
public final class TestLogic: Goim_Logic_Logic.SimpleServiceProtocol, Sendable {
    public struct ConnectCall: Sendable {
        public var server: String
        public var cookie: String
        public var body: AuthBody
    }

    public struct DisconnectCall: Sendable, Equatable {
        public var mid: Int64
        public var key: String
        public var server: String

        public init(mid: Int64, key: String, server: String) {
            self.mid = mid
            self.key = key
            self.server = server
        }
    }

    public struct RenewCall: Sendable {
        public var server: String
        public var roomCount: [String: Int32]
        public var encoding: String?
        /// `grpc-accept-encoding`: what the comet would let Logic compress replies with.
        public var acceptEncoding: String = ""
    }

    public struct ReceiveCall: Sendable {
        public var mid: Int64
        public var proto: Goim_Protocol_Proto
    }

    public struct Calls: Sendable {
        public var connects: [ConnectCall] = []
        public var failedConnects = 0
        public var disconnects: [DisconnectCall] = []
        public var heartbeats: [DisconnectCall] = []
        public var renews: [RenewCall] = []
        public var receives: [ReceiveCall] = []
        /// "disconnect:<key>" and "heartbeat:<key>" in the order Logic handled them.
        public var order: [String] = []

        public init() {}
    }

    private struct Waiter {
        let id: Int
        let check: @Sendable (Calls) -> Bool
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var calls = Calls()
        var waiters: [Waiter] = []
        var nextWaiter = 0
    }

    private let state = Mutex(State())
    /// `ConnectReply.heartbeat` in nanoseconds, per key (default for keys not listed).
    public let heartbeat: @Sendable (String) -> Int64
    /// What RenewOnline answers.
    public let allRoomCount = Mutex<[String: Int32]>([:])

    /// How long Disconnect takes, per key (nil: at once).
    public let disconnectDelay: @Sendable (String) -> Duration?
    /// How many of the next Heartbeat calls fail (recorded, then answered UNAVAILABLE): Redis away, say.
    public let failingHeartbeats = Mutex(0)

    public init(
        heartbeat: @escaping @Sendable (String) -> Int64 = { _ in 240_000_000_000 * 2 },
        disconnectDelay: @escaping @Sendable (String) -> Duration? = { _ in nil }
    ) {
        self.heartbeat = heartbeat
        self.disconnectDelay = disconnectDelay
    }

    public var calls: Calls { state.withLock { $0.calls } }

    private func record(_ change: (inout Calls) -> Void) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            change(&state.calls)
            var ready: [CheckedContinuation<Void, any Error>] = []
            state.waiters.removeAll { waiter in
                if waiter.check(state.calls) {
                    ready.append(waiter.continuation)
                    return true
                }
                return false
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    /// Returns once `condition` holds for the recorded calls; throws after `timeout`.
    public func wait(timeout: Duration = .seconds(10), until condition: @escaping @Sendable (Calls) -> Bool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.waitForever(condition) }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("timed out waiting for Logic calls; have \(self.calls.summary)")
            }
            try await group.next()
            group.cancelAll()
        }
    }

    private func waitForever(_ condition: @escaping @Sendable (Calls) -> Bool) async throws {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let done = state.withLock { state -> Bool in
                    if condition(state.calls) { return true }
                    if Task.isCancelled { return true }
                    state.waiters.append(Waiter(id: id, check: condition, continuation: continuation))
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    // MARK: Logic

    public func connect(request: Goim_Logic_ConnectReq, context: ServerContext) async throws -> Goim_Logic_ConnectReply {
        let body: AuthBody
        do {
            body = try AuthBody.decode(Array(request.token))
        } catch {
            record { $0.failedConnects += 1 }
            throw RPCError(code: .unknown, message: "\(error)")
        }
        record { $0.connects.append(ConnectCall(server: request.server, cookie: request.cookie, body: body)) }
        var reply = Goim_Logic_ConnectReply()
        reply.mid = body.mid
        reply.key = body.key.isEmpty ? UUID().uuidString.lowercased() : body.key
        reply.roomID = body.roomID
        reply.accepts = body.accepts
        reply.heartbeat = heartbeat(reply.key)
        return reply
    }

    public func disconnect(request: Goim_Logic_DisconnectReq, context: ServerContext) async throws -> Goim_Logic_DisconnectReply {
        if let delay = disconnectDelay(request.key) { try await Task.sleep(for: delay) }
        record {
            $0.disconnects.append(DisconnectCall(mid: request.mid, key: request.key, server: request.server))
            $0.order.append("disconnect:\(request.key)")
        }
        var reply = Goim_Logic_DisconnectReply()
        reply.has = true
        return reply
    }

    public func heartbeat(request: Goim_Logic_HeartbeatReq, context: ServerContext) async throws -> Goim_Logic_HeartbeatReply {
        record {
            $0.heartbeats.append(DisconnectCall(mid: request.mid, key: request.key, server: request.server))
            $0.order.append("heartbeat:\(request.key)")
        }
        let fail = failingHeartbeats.withLock { count in
            defer { count = max(0, count - 1) }
            return count > 0
        }
        if fail { throw RPCError(code: .unavailable, message: "redis unavailable (test)") }
        return Goim_Logic_HeartbeatReply()
    }

    /// Overrides the simple form to see the request metadata (the `grpc-encoding` the comet used).
    public func renewOnline(request: ServerRequest<Goim_Logic_OnlineReq>, context: ServerContext) async throws
        -> ServerResponse<Goim_Logic_OnlineReply>
    {
        let encoding = request.metadata[stringValues: "grpc-encoding"].first(where: { _ in true })
        let accept = request.metadata[stringValues: "grpc-accept-encoding"].joined(separator: ",")
        record {
            $0.renews.append(
                RenewCall(
                    server: request.message.server, roomCount: request.message.roomCount, encoding: encoding,
                    acceptEncoding: accept))
        }
        var reply = Goim_Logic_OnlineReply()
        reply.allRoomCount = allRoomCount.withLock { $0 }
        return ServerResponse(message: reply)
    }

    public func renewOnline(request: Goim_Logic_OnlineReq, context: ServerContext) async throws -> Goim_Logic_OnlineReply {
        var reply = Goim_Logic_OnlineReply()
        reply.allRoomCount = allRoomCount.withLock { $0 }
        return reply
    }

    public func receive(request: Goim_Logic_ReceiveReq, context: ServerContext) async throws -> Goim_Logic_ReceiveReply {
        record { $0.receives.append(ReceiveCall(mid: request.mid, proto: request.proto)) }
        return Goim_Logic_ReceiveReply()
    }

    public func nodes(request: Goim_Logic_NodesReq, context: ServerContext) async throws -> Goim_Logic_NodesReply {
        Goim_Logic_NodesReply()
    }
}

extension TestLogic.Calls {
    public var summary: String {
        "connects \(connects.count) (failed \(failedConnects)), disconnects \(disconnects.map(\.key)), heartbeats \(heartbeats.count), renews \(renews.count), receives \(receives.count)"
    }

    public func disconnects(of key: String) -> Int { disconnects.filter { $0.key == key }.count }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
