import Benchmark
import Comet
import Foundation
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import Logging
import LogicClient
import NIOCore
import ServiceLifecycle
import ServiceRuntime
import Synchronization

/// Room fan-out inside one process: a real `CometServer` (its event loops, rooms, direct writes) with
/// `FanoutRig.members` TCP members on loopback, read by one thread that drains into a fixed buffer and allocates
/// nothing, so the allocation count of an iteration is the comet's. One iteration = one push to the whole room.
func fanoutBenchmarks() {
    let rig = Mutex<FanoutRig?>(nil)
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput], maxDuration: .seconds(3), maxIterations: 5_000,
        // 39 per push today; one more allocation per recipient is +1,000.
        thresholds: allocationTolerance(10))

    func register(_ name: String, messages: Int) {
        let proto = FanoutRig.proto(messages: messages)
        let tcpBytesPerPush = proto.body.count  // TCP clients get an op 9 envelope's inner packets
        Benchmark(
            "Room-fanout-\(FanoutRig.members)-TCP-members-\(name)", configuration: configuration,
            closure: { benchmark in
                guard let current = rig.withLock({ $0 }) else { fatalError("fan-out rig missing") }
                for _ in benchmark.scaledIterations {
                    await current.comet.broadcastRoom(FanoutRig.room, proto: proto)
                }
                current.pushes.add(benchmark.scaledIterations.count, ordering: .relaxed)
            },
            setup: {
                let started = try await FanoutRig.start()
                rig.withLock { $0 = started }
            },
            teardown: {
                guard let current = rig.withLock({ $0 }) else { return }
                rig.withLock { $0 = nil }
                try await current.stop(bytesPerPush: tcpBytesPerPush)
            })
    }
    register("1-message", messages: 1)
    register("op9-batch-of-20", messages: 20)
}

/// A comet with `members` authenticated TCP clients in `room`.
final class FanoutRig: Sendable {
    static let members = 1_000
    static let room = "live://bench"

    let comet: CometServer
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let drain: Drain
    /// Pushes made so far (each to every member).
    let pushes = Atomic<Int>(0)

    private init(comet: CometServer, group: ServiceGroup, task: Task<Void, any Error>, drain: Drain) {
        self.comet = comet
        self.group = group
        self.task = task
        self.drain = drain
    }

    /// goim job's push: op 9 whose body holds `messages` op 1000 packets with a 10-byte body.
    static func proto(messages: Int) -> Goim_Protocol_Proto {
        var batch = ByteBuffer()
        for _ in 0..<messages {
            RawBatch.append(operation: Operation(1000), body: Array("0123456789".utf8), to: &batch)
        }
        return Goim_Protocol_Proto(version: 1, operation: 9, sequence: 0, body: Array(batch.readableBytesView))
    }

    static func start() async throws -> FanoutRig {
        var logger = Logger(label: "fanout-bench")
        logger.logLevel = .error
        var configuration = CometConfiguration()
        configuration.env.host = "bench-comet"
        // A push allocates per event loop (a copy, a hop, a future): a fixed count keeps the allocation check's
        // figures the same on machines with any number of cores.
        configuration.eventLoopThreads = 2
        configuration.tcp.bind = [HostPort(host: "127.0.0.1", port: 0)]
        configuration.websocket.bind = []
        configuration.websocket.tlsOpen = false
        configuration.rpcServer.addr = HostPort(host: "127.0.0.1", port: 0)
        configuration.onlineInterval = .seconds(3600)
        var options = CometServer.Options()
        options.registration = false
        let comet = try await CometServer(configuration: configuration, logger: logger, logic: AcceptingLogic(), options: options)
        let group = ServiceGroup(
            configuration: ServiceProcess.configuration(comet.services, logger: logger, maximumShutdown: .seconds(10)))
        let task = Task { try await group.run() }
        let port = try await comet.addresses().tcp[0]

        let drain = Drain()
        for index in 0..<members {
            let fd = try Socket.connect(port: port)
            try Socket.authenticate(fd, mid: Int64(index + 1), room: room)
            try drain.add(fd)
        }
        // Every member must be in the room before the first push.
        while await comet.statistics().authenticated < members {
            try await Task.sleep(for: .milliseconds(10))
        }
        drain.start()
        return FanoutRig(comet: comet, group: group, task: task, drain: drain)
    }

    /// Checks that every push reached every member, then shuts the comet down.
    func stop(bytesPerPush: Int) async throws {
        let expected = pushes.load(ordering: .relaxed) * bytesPerPush * Self.members
        let deadline = ContinuousClock.now + .seconds(10)
        while drain.bytes.load(ordering: .relaxed) < expected, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let received = drain.bytes.load(ordering: .relaxed)
        if received != expected {
            fatalError("fan-out lost or duplicated data: members received \(received) bytes, expected \(expected)")
        }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        drain.stop()
    }
}

/// Accepts every token: the JSON body's mid, key (or a generated one) and room, like goim's Logic without Redis.
struct AcceptingLogic: LogicAPI {
    func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply {
        let body = try AuthBody.decode(Array(token))
        var reply = Goim_Logic_ConnectReply()
        reply.mid = body.mid
        reply.key = body.key.isEmpty ? "bench-\(body.mid)" : body.key
        reply.roomID = body.roomID
        reply.accepts = body.accepts
        reply.heartbeat = 600 * 1_000_000_000
        return reply
    }
    func disconnect(mid: Int64, key: String, server: String) async throws {}
    func heartbeat(mid: Int64, key: String, server: String) async throws {}
    func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32] { roomCount }
    func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws {}
    func refreshToken(mid: Int64, key: String, server: String, token: Data) async throws -> Int64 { 0 }
}
