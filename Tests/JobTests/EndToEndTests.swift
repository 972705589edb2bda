import Comet
import Foundation
import GoIMClient
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import LogicClient
import Logging
import NIOCore
import ServiceLifecycle
import ServiceRuntime
import TestSupport
import Testing

@testable import Job

/// Logic's part of a connection, in-process: accepts every auth body (as goim's Logic does).
struct AcceptingLogic: LogicAPI {
    func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply {
        let body = try AuthBody.decode(Array(token))
        var reply = Goim_Logic_ConnectReply()
        reply.mid = body.mid
        reply.key = body.key.isEmpty ? UUID().uuidString : body.key
        reply.roomID = body.roomID
        reply.accepts = body.accepts
        reply.heartbeat = 480_000_000_000
        return reply
    }

    func disconnect(mid: Int64, key: String, server: String) async throws {}
    func refreshToken(mid: Int64, key: String, server: String, token: Data) async throws -> Int64 { 0 }
    func heartbeat(mid: Int64, key: String, server: String) async throws {}
    func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32] { roomCount }
    func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws {}
}

/// A real comet (the Comet module) on loopback ports, registered in the harness's registry.
struct RealComet: Sendable {
    let service: CometServer
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let addresses: BoundAddresses

    static func start(_ hostname: String, harness: JobHarness) async throws -> RealComet {
        var configuration = CometConfiguration()
        configuration.env.host = hostname
        configuration.eventLoopThreads = 1
        configuration.tcp.bind = [HostPort(host: "127.0.0.1", port: 0)]
        configuration.websocket.bind = [HostPort(host: "127.0.0.1", port: 0)]
        configuration.rpcServer.addr = HostPort(host: "127.0.0.1", port: 0)
        configuration.redis = harness.configuration.redis
        configuration.registry = harness.configuration.registry
        configuration.onlineInterval = .seconds(3600)
        var options = CometServer.Options()
        options.sweepInterval = .milliseconds(100)
        let service = try await CometServer(configuration: configuration, logger: testLogger("goim.comet.test"), logic: AcceptingLogic(), options: options)
        let group = ServiceGroup(
            configuration: ServiceProcess.configuration(service.services, logger: testLogger("goim.comet.test"), maximumShutdown: .seconds(30)))
        let task = Task { try await group.run() }
        let addresses = try await service.addresses()
        return RealComet(service: service, group: group, task: task, addresses: addresses)
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    func client(webSocket: Bool = false, mid: Int64, key: String, room: String, accepts: [Int32]) async throws -> GoIMClient {
        let client = try await GoIMClient.connect(
            port: webSocket ? addresses.webSocket[0] : addresses.tcp[0], transport: webSocket ? .webSocket() : .tcp)
        let reply = try await client.auth(AuthBody(mid: mid, key: key, roomID: room, platform: "test", accepts: accepts))
        #expect(reply.operation == Operation.authReply)
        return client
    }
}

extension GoIMClient {
    /// The next `count` pushed packets (ops ≥ 1000), waiting at most `timeout`.
    func pushes(_ count: Int, timeout: Duration = .seconds(10)) async throws -> [ReceivedPacket] {
        let stream = packets
        return try await withThrowingTaskGroup(of: [ReceivedPacket].self) { group in
            group.addTask {
                var result: [ReceivedPacket] = []
                for await packet in stream where packet.packet.operation.rawValue >= 1000 {
                    result.append(packet)
                    if result.count == count { return result }
                }
                return result
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return []
            }
            let result = try await group.next()!
            group.cancelAll()
            return result
        }
    }
}

@Suite("Job with real comets and goim clients", .serialized, .startsServers)
struct JobEndToEndTests {
    @Test("Key, room and broadcast pushes reach goim TCP and WebSocket clients through real comets")
    func endToEnd() async throws {
        let harness = try await JobHarness.start()
        defer { Task { await harness.stop() } }
        let one = try await RealComet.start("comet-1", harness: harness)
        let two = try await RealComet.start("comet-2", harness: harness)
        let job = try await harness.makeJob()
        try await harness.withRunning(job) {
            let tcp = try await one.client(mid: 1, key: "key-1", room: "live://1000", accepts: [1000, 1001])
            let ws = try await two.client(webSocket: true, mid: 2, key: "key-2", room: "live://1000", accepts: [1000, 1001])
            let other = try await two.client(mid: 3, key: "key-3", room: "live://2000", accepts: [1001])
            // Publish only once job knows both comets: room and broadcast messages go to the comets job knows.
            try #require(
                await eventually { job.pool.comet("comet-1") != nil && job.pool.comet("comet-2") != nil },
                "job did not find both comets")

            try await harness.publish(.push(server: "comet-2", keys: ["key-2"], "to-key-2", operation: 1000))
            let keyPush = try await ws.pushes(1)
            #expect(keyPush.map { String(buffer: $0.packet.body) } == ["to-key-2"])
            #expect(keyPush.first?.inEnvelope == true, "WebSocket clients get the op 9 envelope")

            for index in 0..<30 { try await harness.publishRoom("live://1000", "room-\(index)", operation: 1002) }
            let expected = (0..<30).map { "room-\($0)" }
            #expect(try await tcp.pushes(30).map { String(buffer: $0.packet.body) } == expected)
            #expect(try await ws.pushes(30).map { String(buffer: $0.packet.body) } == expected)

            try await harness.publish(.broadcast("to-all", operation: 1001, speed: 0))
            for client in [tcp, ws, other] {
                let packets = try await client.pushes(1)
                #expect(packets.map { String(buffer: $0.packet.body) } == ["to-all"])
                #expect(packets.first?.packet.operation == 1001)
            }
            #expect(await eventually { job.statistics.delivered.load(ordering: .relaxed) == 32 })
            for client in [tcp, ws, other] { await client.close() }
        }
        #expect(job.statistics.snapshot.undeliverable == 0)
        await one.stop()
        await two.stop()
    }

    @Test("A comet restarted under the same name on a new port gets the later room messages")
    func cometRestart() async throws {
        let harness = try await JobHarness.start()
        defer { Task { await harness.stop() } }
        let job = try await harness.makeJob()
        try await harness.withRunning(job) {
            let first = try await RealComet.start("comet-1", harness: harness)
            let before = try await first.client(mid: 1, key: "k", room: "live://1", accepts: [])
            // Publish only once job knows the comet (a message for a room on no known comet goes nowhere).
            try #require(await eventually { job.pool.comet("comet-1") != nil }, "job did not find comet-1")
            try await harness.publishRoom("live://1", "before")
            #expect(try await before.pushes(1).map { String(buffer: $0.packet.body) } == ["before"])
            await before.close()
            await first.stop()  // deregisters
            let second = try await RealComet.start("comet-1", harness: harness)
            let after = try await second.client(mid: 1, key: "k", room: "live://1", accepts: [])
            try #require(await eventually { job.pool.comet("comet-1") != nil }, "job did not find comet-1 again")
            try await harness.publishRoom("live://1", "after")
            #expect(try await after.pushes(1).map { String(buffer: $0.packet.body) } == ["after"])
            await after.close()
            await second.stop()
        }
    }
}
