import Foundation
import GoIMConfig
import GoIMRPC
import Logging
import NATS
import Redis
import Registry
import ServiceLifecycle
import ServiceRuntime
import SwiftProtobuf
import Synchronization
import TestSupport

@testable import Job

/// A logger for tests: silent unless JOB_TEST_LOG names a level (e.g. `JOB_TEST_LOG=debug`).
func testLogger(_ label: String = "goim.job.test") -> Logger {
    var logger = Logger(label: label, factory: { label in StreamLogHandler.standardError(label: label) })
    logger.logLevel = ProcessInfo.processInfo.environment["JOB_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}

/// Real nats-server (JetStream) and redis-server, fake comets registered in the registry, and
/// helpers to publish pushes the way logic does and to run jobs in-process.
final class JobHarness: Sendable {
    let nats: ServerProcess
    let redisServer: ServerProcess
    let redis: RedisClient
    let registry: CometRegistry
    let publisher: NATSConnection
    let jetStream: JetStream
    let configuration: JobConfiguration
    let comets = Mutex<[FakeCometServer]>([])

    private init(nats: ServerProcess, redisServer: ServerProcess, configuration: JobConfiguration) async throws {
        self.nats = nats
        self.redisServer = redisServer
        self.configuration = configuration
        redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: redisServer.port, connectTimeout: .seconds(5)))
        registry = CometRegistry(redis: redis, configuration: configuration.registry)
        publisher = try await NATSConnection.connect(NATSConfiguration(urls: ["nats://127.0.0.1:\(nats.port)"]))
        jetStream = try publisher.jetStream()
        try await jetStream.createOrUpdateStream(StreamConfiguration(configuration.nats))
    }

    /// Starts the servers; `configure` adjusts the job configuration (fast timings by default).
    static func start(_ configure: (inout JobConfiguration) -> Void = { _ in }) async throws -> JobHarness {
        let nats = try await TestServers.nats(jetStream: true)
        let redis = try await TestServers.redis()
        var configuration = JobConfiguration()
        configuration.env.host = "job-test"
        configuration.nats.urls = ["nats://127.0.0.1:\(nats.port)"]
        configuration.nats.maxAge = .seconds(3600)
        configuration.nats.maxBytes = 64 << 20
        configuration.redis.addr = HostPort(host: "127.0.0.1", port: redis.port)
        configuration.registry.refresh = .milliseconds(400)
        configuration.registry.ttl = .seconds(30)
        configuration.consumer.ackWait = .seconds(5)
        configuration.consumer.drainTimeout = .seconds(3)
        configuration.comet.timeout = .seconds(2)
        configuration.comet.backoff = .milliseconds(20)
        configuration.comet.maxBackoff = .milliseconds(200)
        configure(&configuration)
        return try await JobHarness(nats: nats, redisServer: redis, configuration: configuration)
    }

    func stop() async {
        for comet in comets.withLock({ $0 }) { await comet.stop() }
        await publisher.close()
        await nats.stop()
        await redisServer.stop()
    }

    /// Starts a fake comet and registers it.
    @discardableResult
    func addComet(_ hostname: String) async throws -> FakeCometServer {
        let comet = FakeCometServer(hostname: hostname)
        try await comet.start()
        try await register(comet)
        comets.withLock { $0.append(comet) }
        return comet
    }

    func register(_ comet: FakeCometServer) async throws {
        try await registry.register(CometInstance(hostname: comet.hostname, rpcAddress: comet.rpcAddress))
    }

    func deregister(_ comet: FakeCometServer) async throws {
        try await registry.deregister(hostname: comet.hostname)
    }

    // MARK: Publishing, as logic does

    func publish(_ message: Goim_Logic_PushMsg) async throws {
        let type =
            switch message.type {
            case .push: "push"
            case .room: "room"
            default: "broadcast"
            }
        _ = try await jetStream.publish(configuration.nats.subject(for: type), payload: try message.serializedBytes())
    }

    func publishRaw(_ payload: [UInt8], type: String = "room") async throws {
        _ = try await jetStream.publish(configuration.nats.subject(for: type), payload: payload)
    }

    func publishRoom(_ room: String, _ body: String, operation: Int32 = 1000) async throws {
        try await publish(.room(room, body, operation: operation))
    }

    // MARK: Jobs

    /// Builds a job on this harness's servers (not yet running).
    func makeJob(_ configure: (inout JobConfiguration) -> Void = { _ in }) async throws -> JobWorker {
        var configuration = configuration
        configure(&configuration)
        return try await JobWorker(configuration: configuration, logger: testLogger())
    }

    /// Runs `body` while `job` runs, then shuts the job down gracefully.
    func withRunning<T: Sendable>(_ job: JobWorker, _ body: () async throws -> T) async throws -> T {
        let group = ServiceGroup(
            configuration: ServiceProcess.configuration(job.services, logger: testLogger(), maximumShutdown: .seconds(60)))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            do {
                let result = try await body()
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
        }
    }
}

extension Goim_Logic_PushMsg {
    static func room(_ room: String, _ body: String, operation: Int32 = 1000) -> Self {
        var message = Self()
        message.type = .room
        message.operation = operation
        message.room = room
        message.msg = Data(body.utf8)
        return message
    }

    static func push(server: String, keys: [String], _ body: String, operation: Int32 = 1000) -> Self {
        var message = Self()
        message.type = .push
        message.operation = operation
        message.server = server
        message.keys = keys
        message.msg = Data(body.utf8)
        return message
    }

    static func broadcast(_ body: String, operation: Int32 = 1000, speed: Int32 = 0) -> Self {
        var message = Self()
        message.type = .broadcast
        message.operation = operation
        message.speed = speed
        message.msg = Data(body.utf8)
        return message
    }
}

