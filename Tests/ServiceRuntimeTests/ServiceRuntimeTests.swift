import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMRPC
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing

@testable import ServiceRuntime

private let logger: Logger = {
    var logger = Logger(label: "goim.runtime.test")
    logger.logLevel = .critical
    return logger
}()

/// Answers `goim.comet.Comet.Rooms` with one room: enough to see a call go through the server.
private struct OneRoomComet: Goim_Comet_Comet.SimpleServiceProtocol {
    func pushMsg(request: Goim_Comet_PushMsgReq, context: ServerContext) async throws -> Goim_Comet_PushMsgReply { .init() }
    func broadcast(request: Goim_Comet_BroadcastReq, context: ServerContext) async throws -> Goim_Comet_BroadcastReply { .init() }
    func broadcastRoom(request: Goim_Comet_BroadcastRoomReq, context: ServerContext) async throws -> Goim_Comet_BroadcastRoomReply {
        .init()
    }
    func rooms(request: Goim_Comet_RoomsReq, context: ServerContext) async throws -> Goim_Comet_RoomsReply {
        var reply = Goim_Comet_RoomsReply()
        reply.rooms = ["live://1": true]
        return reply
    }
}

@Suite("ServiceRuntime")
struct ServiceRuntimeTests {
    @Test("a gRPC server on port 0 publishes its port, serves calls, and stops on graceful shutdown")
    func grpcServer() async throws {
        let server = GRPCServerService(
            name: "test", address: HostPort(host: "127.0.0.1", port: 0), services: [OneRoomComet()], logger: logger)
        let group = ServiceGroup(configuration: ServiceProcess.configuration([server], logger: logger, maximumShutdown: .seconds(5)))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let port = try await server.listeningPort()
            #expect(port > 0 && server.boundPort == port)
            try await withGRPCClient(
                transport: try .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
            ) { client in
                let reply = try await Goim_Comet_Comet.Client(wrapping: client).rooms(Goim_Comet_RoomsReq())
                #expect(reply.rooms == ["live://1": true])
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test("a server that cannot bind fails its service and whoever waits for its port")
    func bindFailure() async throws {
        let first = GRPCServerService(
            name: "first", address: HostPort(host: "127.0.0.1", port: 0), services: [OneRoomComet()], logger: logger)
        let group = ServiceGroup(configuration: ServiceProcess.configuration([first], logger: logger, maximumShutdown: .seconds(5)))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let taken = try await first.listeningPort()
            let second = GRPCServerService(
                name: "second", address: HostPort(host: "127.0.0.1", port: taken), services: [OneRoomComet()], logger: logger)
            await #expect(throws: (any Error).self) { try await second.run() }
            await #expect(throws: (any Error).self) { try await second.listeningPort() }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test("services stop in reverse order; the event-loop group shuts down last")
    func order() async throws {
        let events = Mutex<[String]>([])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        struct Recorder: Service {
            let name: String
            let events: @Sendable (String) -> Void
            func run() async throws {
                try? await gracefulShutdown()
                events(name)
            }
        }
        let record: @Sendable (String) -> Void = { name in events.withLock { $0.append(name) } }
        let services: [any Service] = [
            EventLoopGroupShutdown(group) { record("event loops") },
            Recorder(name: "clients", events: record),
            Recorder(name: "listeners", events: record),
        ]
        let serviceGroup = ServiceGroup(configuration: ServiceProcess.configuration(services, logger: logger, maximumShutdown: .seconds(5)))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await serviceGroup.run() }
            await serviceGroup.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(events.withLock { $0 } == ["listeners", "clients", "event loops"])
    }
}
