import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMProtocol
import GoIMRPC
import NIOCore
import Synchronization

@testable import Job

/// One call a comet received.
struct RecordedCall: Sendable {
    enum Kind: String, Sendable { case pushMsg, broadcast, broadcastRoom, pushUsers }
    var kind: Kind
    var room: String = ""
    var keys: [String] = []
    var protoOp: Int32 = 0
    var speed: Int32 = 0
    var proto: Goim_Protocol_Proto
    var at: ContinuousClock.Instant = .now
    /// `Users/Push`: each user with its offset and epoch.
    var users: [Swiftgoim_Comet_UserOffset] = []

    /// The inner packets of the op 9 envelope.
    var packets: [Packet] {
        (try? RawBatch.split(ByteBuffer(bytes: proto.body))) ?? []
    }

    /// Inner packet bodies as strings.
    var messages: [String] { packets.map { String(buffer: $0.body) } }
}

/// What a fake comet records and how it behaves; shared by the gRPC and in-memory fakes.
final class CometRecorder: Sendable {
    struct State {
        var calls: [RecordedCall] = []
        var latency: Duration = .zero
        var rooms: Set<String> = []
        var failing = false
        /// Calls that arrived (recorded or not yet).
        var started = 0
    }

    let hostname: String
    let state = Mutex(State())

    init(hostname: String) { self.hostname = hostname }

    var calls: [RecordedCall] { state.withLock { $0.calls } }
    var started: Int { state.withLock { $0.started } }

    func calls(_ kind: RecordedCall.Kind) -> [RecordedCall] { calls.filter { $0.kind == kind } }

    /// Every message of room pushes to `room`, in the order the comet got them.
    func roomMessages(_ room: String) -> [String] {
        calls(.broadcastRoom).filter { $0.room == room }.flatMap(\.messages)
    }

    var allMessages: [String] { calls.flatMap(\.messages) }

    func setLatency(_ latency: Duration) { state.withLock { $0.latency = latency } }
    func setRooms(_ rooms: Set<String>) { state.withLock { $0.rooms = rooms } }
    func setFailing(_ failing: Bool) { state.withLock { $0.failing = failing } }

    func record(_ call: RecordedCall) async throws {
        let (latency, failing) = state.withLock { state in
            state.started += 1
            return (state.latency, state.failing)
        }
        if failing { throw RPCError(code: .unavailable, message: "fake comet is failing") }
        if latency > .zero { try await Task.sleep(for: latency) }
        state.withLock { $0.calls.append(call) }
    }

    /// Waits until `condition` holds (polling), at most `timeout`.
    func wait(timeout: Duration = .seconds(10), _ condition: (CometRecorder) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(self) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition(self)
    }
}

extension CometRecorder {
    func pushMsg(_ request: Goim_Comet_PushMsgReq) async throws {
        try await record(RecordedCall(kind: .pushMsg, keys: request.keys, protoOp: request.protoOp, proto: request.proto))
    }

    func broadcast(_ request: Goim_Comet_BroadcastReq) async throws {
        try await record(
            RecordedCall(kind: .broadcast, protoOp: request.protoOp, speed: request.speed, proto: request.proto))
    }

    func broadcastRoom(_ request: Goim_Comet_BroadcastRoomReq) async throws {
        guard !request.roomID.isEmpty else { throw RPCError(code: .unknown, message: "rpc broadcast  room arg error") }
        try await record(RecordedCall(kind: .broadcastRoom, room: request.roomID, proto: request.proto))
    }

    func pushUsers(_ request: Swiftgoim_Comet_UserPushReq) async throws {
        var proto = Goim_Protocol_Proto()
        proto.op = request.op
        proto.body = request.body
        try await record(RecordedCall(kind: .pushUsers, protoOp: request.op, proto: proto, users: request.users))
    }

    func roomsReply() -> Set<String> { state.withLock { $0.rooms } }
}

/// An in-memory comet (no sockets) for unit tests of delivery and batching.
final class MemoryComet: CometRPC {
    let recorder: CometRecorder
    private let stopped = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let isShutdown = Atomic<Bool>(false)

    init(recorder: CometRecorder) { self.recorder = recorder }

    func pushMsg(_ request: Goim_Comet_PushMsgReq) async throws { try await recorder.pushMsg(request) }
    func broadcast(_ request: Goim_Comet_BroadcastReq) async throws { try await recorder.broadcast(request) }
    func broadcastRoom(_ request: Goim_Comet_BroadcastRoomReq) async throws { try await recorder.broadcastRoom(request) }
    func pushUsers(_ request: Swiftgoim_Comet_UserPushReq) async throws { try await recorder.pushUsers(request) }
    func rooms() async throws -> Set<String> { recorder.roomsReply() }

    func run() async {
        await withCheckedContinuation { continuation in
            let resumeNow = stopped.withLock { stored -> Bool in
                if isShutdown.load(ordering: .relaxed) { return true }
                stored = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func shutdown() {
        isShutdown.store(true, ordering: .relaxed)
        stopped.withLock { $0.take() }?.resume()
    }
}

/// A real `goim.comet.Comet` gRPC server on loopback that records what it receives. It can be
/// stopped abruptly (as a crash) and started again on the same port.
final class FakeCometServer: Sendable {
    struct Service: Goim_Comet_Comet.SimpleServiceProtocol {
        let recorder: CometRecorder

        func pushMsg(request: Goim_Comet_PushMsgReq, context: ServerContext) async throws -> Goim_Comet_PushMsgReply {
            try await recorder.pushMsg(request)
            return Goim_Comet_PushMsgReply()
        }

        func broadcast(request: Goim_Comet_BroadcastReq, context: ServerContext) async throws -> Goim_Comet_BroadcastReply {
            try await recorder.broadcast(request)
            return Goim_Comet_BroadcastReply()
        }

        func broadcastRoom(
            request: Goim_Comet_BroadcastRoomReq, context: ServerContext
        ) async throws -> Goim_Comet_BroadcastRoomReply {
            try await recorder.broadcastRoom(request)
            return Goim_Comet_BroadcastRoomReply()
        }

        func rooms(request: Goim_Comet_RoomsReq, context: ServerContext) async throws -> Goim_Comet_RoomsReply {
            var reply = Goim_Comet_RoomsReply()
            for room in recorder.roomsReply() { reply.rooms[room] = true }
            return reply
        }
    }

    let recorder: CometRecorder
    private let running = Mutex<(port: Int, task: Task<Void, Never>?)>((0, nil))

    init(hostname: String) {
        recorder = CometRecorder(hostname: hostname)
    }

    var hostname: String { recorder.hostname }
    var port: Int { running.withLock { $0.port } }
    var rpcAddress: String { "127.0.0.1:\(port)" }

    /// Starts serving, on `port` (0: a free one the first time, the same one afterwards).
    func start() async throws {
        let wanted = running.withLock { $0.port }
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: wanted), transportSecurity: .plaintext),
            services: [Service(recorder: recorder)])
        let task = Task<Void, Never> {
            do { try await server.serve() } catch {}
        }
        guard let port = try await server.listeningAddress?.ipv4?.port else {
            task.cancel()
            throw RPCError(code: .unavailable, message: "fake comet did not start")
        }
        running.withLock { $0 = (port, task) }
    }

    /// Stops at once, as a crash would (calls in flight fail).
    func stop() async {
        let task = running.withLock { state -> Task<Void, Never>? in
            defer { state.task = nil }
            return state.task
        }
        task?.cancel()
        await task?.value
    }
}
