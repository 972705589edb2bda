import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMClient
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import Logging
import NIOCore
import NIOPosix
import RPCAuth
import ServiceLifecycle
import ServiceRuntime
import TestLogic
import Testing

@testable import Comet

/// A running comet with a test Logic, and a gRPC client to the comet's `goim.comet.Comet` service.
struct Harness: Sendable {
    let comet: CometServer
    let logic: TestLogic
    let addresses: BoundAddresses
    let rpc: Goim_Comet_Comet.Client<HTTP2ClientTransport.Posix>

    var tcpPort: Int { addresses.tcp[0] }
    /// The comet's shared state (buckets, rooms, counters).
    var core: Comet { comet.comet }
    var wsPort: Int { addresses.webSocket[0] }

    /// A client, connected and (unless `auth` is nil) authenticated.
    func client(
        _ transport: GoIMClient.Transport = .tcp, auth: AuthBody?, delivery: GoIMClient.Delivery = .stream,
        port: Int? = nil
    ) async throws -> GoIMClient {
        let resolvedPort: Int
        if let port {
            resolvedPort = port
        } else {
            switch transport {
            case .tcp: resolvedPort = tcpPort
            case .webSocket: resolvedPort = wsPort
            case .webSocketTLS: resolvedPort = addresses.webSocketTLS[0]
            }
        }
        let client = try await GoIMClient.connect(port: resolvedPort, transport: transport, delivery: delivery)
        if let auth {
            let reply = try await client.auth(auth)
            #expect(reply.operation == .authReply)
        }
        return client
    }

    func broadcastRoom(_ room: String, operation: Int32 = 1000, body: String) async throws {
        var request = Goim_Comet_BroadcastRoomReq()
        request.roomID = room
        request.proto = Envelope.proto(operation: operation, bodies: [body])
        _ = try await rpc.broadcastRoom(request)
    }

    func pushKeys(_ keys: [String], operation: Int32 = 1000, body: String) async throws {
        var request = Goim_Comet_PushMsgReq()
        request.keys = keys
        request.protoOp = operation
        request.proto = Envelope.proto(operation: operation, bodies: [body])
        _ = try await rpc.pushMsg(request)
    }

    func statistics() async -> CometStatistics { await comet.statistics() }

    /// Waits until `condition` holds for the comet's statistics (polling briefly: they have no event to await).
    func waitForStatistics(timeout: Duration = .seconds(10), _ condition: (CometStatistics) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let stats = await statistics()
            if condition(stats) { return }
            guard ContinuousClock.now < deadline else { throw TestFailure("statistics never matched: \(stats)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

enum Envelope {
    /// goim Job's push: op 9, ver 1, seq 0, body = inner packets (op `operation`, ver 1, seq 0).
    static func proto(operation: Int32, bodies: [String]) -> Goim_Protocol_Proto {
        var batch = ByteBuffer()
        for body in bodies {
            RawBatch.append(operation: Operation(operation), body: Array(body.utf8), to: &batch)
        }
        return Goim_Protocol_Proto(version: 1, operation: 9, sequence: 0, body: Array(batch.readableBytesView))
    }
}

let testLogger: Logger = {
    var logger = Logger(label: "comet-test")
    logger.logLevel = ProcessInfo.processInfo.environment["COMET_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

/// Runs `body` against a fresh comet and test Logic on loopback ports, then shuts both down gracefully.
func withComet(
    logic: TestLogic = TestLogic(),
    options: CometServer.Options = {
        var options = CometServer.Options()
        options.registration = false
        options.sweepInterval = .milliseconds(50)
        return options
    }(),
    configure: (inout CometConfiguration) -> Void = { _ in },
    logicInterceptors: [any ServerInterceptor] = [],
    rpcSecret: String = "",
    afterShutdown: @Sendable (TestLogic) async throws -> Void = { _ in },
    _ body: @Sendable (Harness) async throws -> Void
) async throws {
    let logicServer = GRPCServer(
        transport: .http2NIOPosix(
            address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext,
            config: .defaults { $0.compression.enabledAlgorithms = .all }),
        services: [logic], interceptors: logicInterceptors)
    let logicTask = Task { try await logicServer.serve() }
    defer { logicTask.cancel() }
    guard let logicPort = try await logicServer.listeningAddress?.ipv4?.port else {
        throw TestFailure("test Logic did not start")
    }

    var configuration = CometConfiguration()
    configuration.env.host = "test-comet"
    configuration.eventLoopThreads = 2
    configuration.tcp.bind = [HostPort(host: "127.0.0.1", port: 0)]
    configuration.websocket.bind = [HostPort(host: "127.0.0.1", port: 0)]
    configuration.websocket.tlsBind = [HostPort(host: "127.0.0.1", port: 0)]
    configuration.rpcServer.addr = HostPort(host: "127.0.0.1", port: 0)
    configuration.rpcClient.addrs = [HostPort(host: "127.0.0.1", port: logicPort)]
    configuration.rpcClient.timeout = .seconds(5)
    configuration.onlineInterval = .seconds(3600)
    configure(&configuration)

    let comet = try await CometServer(configuration: configuration, logger: testLogger, options: options)
    let serviceGroup = ServiceGroup(
        configuration: ServiceProcess.configuration(comet.services, logger: testLogger, maximumShutdown: .seconds(30)))
    let cometTask = Task { try await serviceGroup.run() }

    let addresses: BoundAddresses
    do {
        addresses = try await comet.addresses()
    } catch {
        await serviceGroup.triggerGracefulShutdown()
        _ = try? await cometTask.value
        logicServer.beginGracefulShutdown()
        throw error
    }
    let rpcClient = GRPCClient(
        transport: try .http2NIOPosix(
            target: .ipv4(address: "127.0.0.1", port: addresses.rpc), transportSecurity: .plaintext),
        interceptors: [SharedSecretClientInterceptor(secret: rpcSecret)])
    let rpcTask = Task { try await rpcClient.runConnections() }
    let harness = Harness(comet: comet, logic: logic, addresses: addresses, rpc: Goim_Comet_Comet.Client(wrapping: rpcClient))

    var failure: (any Error)?
    do {
        try await body(harness)
    } catch {
        failure = error
    }
    rpcClient.beginGracefulShutdown()
    _ = try? await rpcTask.value
    await serviceGroup.triggerGracefulShutdown()
    do {
        try await cometTask.value
    } catch {
        failure = failure ?? error
    }
    if failure == nil {
        do { try await afterShutdown(logic) } catch { failure = error }
    }
    logicServer.beginGracefulShutdown()
    _ = try? await logicTask.value
    if let failure { throw failure }
}

/// Collects received packets of one client.
extension GoIMClient {
    /// The next `count` packets from `packets`; throws on timeout or close.
    func receive(_ count: Int = 1, timeout: Duration = .seconds(10)) async throws -> [ReceivedPacket] {
        let stream = packets
        return try await withThrowingTaskGroup(of: [ReceivedPacket].self) { group in
            group.addTask {
                var result: [ReceivedPacket] = []
                for await packet in stream {
                    result.append(packet)
                    if result.count == count { return result }
                }
                throw TestFailure("connection closed after \(result.count) of \(count) packets")
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("timed out waiting for \(count) packets")
            }
            let result = try await group.next()!
            group.cancelAll()
            return result
        }
    }

    func receiveBodies(_ count: Int = 1, timeout: Duration = .seconds(10)) async throws -> [String] {
        try await receive(count, timeout: timeout).map { String(buffer: $0.packet.body) }
    }
}

func auth(mid: Int64 = 1, key: String, room: String = "", accepts: [Int32] = [1000]) -> AuthBody {
    AuthBody(mid: mid, key: key, roomID: room, platform: "test", accepts: accepts)
}
