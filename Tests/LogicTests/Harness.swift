import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMRPC
import HTTPTypes
import HummingbirdTesting
import Logging
import NATS
import NIOCore
import Redis
import RPCAuth
import Registry
import ServiceLifecycle
import Synchronization
import ServiceRuntime
import TestSupport
import Testing

@testable import Logic

/// Real redis-server and nats-server, and a whole `LogicServer` on ephemeral ports, for one test.
/// Every name that could collide between parallel tests (stream, subjects, registry prefix) is unique.
final class LogicHarness: Sendable {
    let redisServer: ServerProcess
    let natsServer: ServerProcess
    let configuration: LogicConfiguration
    let server: LogicServer
    let httpPort: Int
    let rpcPort: Int
    /// A separate client for assertions about Redis contents.
    let redis: RedisClient
    let registry: CometRegistry
    let nats: NATSConnection
    let id: String

    private init(
        redisServer: ServerProcess, natsServer: ServerProcess, configuration: LogicConfiguration, server: LogicServer,
        httpPort: Int, rpcPort: Int, redis: RedisClient, nats: NATSConnection, id: String
    ) {
        self.redisServer = redisServer
        self.natsServer = natsServer
        self.configuration = configuration
        self.server = server
        self.httpPort = httpPort
        self.rpcPort = rpcPort
        self.redis = redis
        self.registry = CometRegistry(redis: redis, configuration: configuration.registry)
        self.nats = nats
        self.id = id
    }

    static func baseConfiguration(id: String, redisPort: Int, natsPort: Int) -> LogicConfiguration {
        var configuration = LogicConfiguration()
        configuration.env.host = "logic-test-\(id)"
        configuration.httpServer.addr = HostPort(host: "127.0.0.1", port: 0)
        configuration.rpcServer.addr = HostPort(host: "127.0.0.1", port: 0)
        configuration.redis.addr = HostPort(host: "127.0.0.1", port: redisPort)
        configuration.redis.expire = .seconds(1800)
        // Generous: a loaded CI machine can take more than 300 ms to accept; outage tests see refusals at once anyway.
        configuration.redis.dialTimeout = .seconds(2)
        configuration.nats.urls = ["nats://127.0.0.1:\(natsPort)"]
        configuration.nats.stream = "T\(id)"
        configuration.nats.subject = "t\(id).push"
        configuration.nats.receiveSubject = "t\(id).receive"
        configuration.registry.prefix = "t\(id):comet:"
        configuration.online.refresh = .seconds(3600)  // tests refresh explicitly
        return configuration
    }

    /// Starts the servers and Logic, runs `body`, then shuts everything down whatever happens.
    static func run(
        _ configure: @Sendable (inout LogicConfiguration) -> Void = { _ in },
        _ body: @Sendable (LogicHarness) async throws -> Void
    ) async throws {
        let id = String(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(10)).lowercased()
        let redisServer = try await TestServers.redis()
        let natsServer = try await TestServers.nats(jetStream: true)
        defer {
            redisServer.stopInBackground()
            natsServer.stopInBackground()
        }
        var configuration = baseConfiguration(id: id, redisPort: redisServer.port, natsPort: natsServer.port)
        configure(&configuration)
        var logger = Logger(label: "logic-test")
        logger.logLevel = ProcessInfo.processInfo.environment["LOGIC_TEST_LOG"] != nil ? .debug : .critical
        let server = try await LogicServer(configuration: configuration, logger: logger)
        let group = ServiceGroup(configuration: ServiceProcess.configuration(server.services, logger: logger, maximumShutdown: .seconds(15)))
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: redisServer.port, connectTimeout: .seconds(5)))
        let nats = try await NATSConnection.connect(NATSConfiguration(urls: ["nats://127.0.0.1:\(natsServer.port)"]))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            do {
                let httpPort = try await server.httpPort()
                let rpcPort = try await server.rpcPort()
                try await waitUntil("JetStream queue connected") { server.queue.isConnected }
                let harness = LogicHarness(
                    redisServer: redisServer, natsServer: natsServer, configuration: configuration, server: server,
                    httpPort: httpPort, rpcPort: rpcPort, redis: redis, nats: nats, id: id)
                try await body(harness)
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                await nats.close()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            await nats.close()
        }
    }

    // MARK: - HTTP

    struct HTTPReply: Sendable {
        var status: Int
        var body: String
        var contentType: String?
    }

    func http(
        _ method: HTTPRequest.Method, _ uri: String, body: String? = nil, headers: HTTPFields = [:]
    ) async throws -> HTTPReply {
        try await TestClient.withClient(host: "127.0.0.1", port: httpPort) { client in
            let response = try await client.execute(
                TestClient.Request(uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }))
            return HTTPReply(
                status: response.status.code, body: response.body.map { String(buffer: $0) } ?? "",
                contentType: response.headers[.contentType])
        }
    }

    func post(_ uri: String, _ body: String = "", headers: HTTPFields = [:]) async throws -> HTTPReply {
        try await http(.post, uri, body: body, headers: headers)
    }

    func get(_ uri: String) async throws -> HTTPReply {
        try await http(.get, uri)
    }

    // MARK: - gRPC

    func withLogicClient<T: Sendable>(
        compression: CompressionAlgorithm? = nil, port: Int? = nil, secret: String = "",
        _ body: (Goim_Logic_Logic.Client<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        if compression != nil { config.compression = .init(algorithm: .gzip, enabledAlgorithms: .gzip) }
        let transport = try HTTP2ClientTransport.Posix(
            target: ResolvableTargets.IPv4(addresses: [.init(host: "127.0.0.1", port: port ?? rpcPort)]), transportSecurity: .plaintext, config: config)
        return try await withGRPCClient(transport: transport, interceptors: [SharedSecretClientInterceptor(secret: secret)]) {
            client in
            try await body(Goim_Logic_Logic.Client(wrapping: client))
        }
    }

    /// A plaintext gRPC client of logic's port, without the internal secret.
    private func withPlainClient<T: Sendable>(_ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T) async throws -> T {
        let transport = try HTTP2ClientTransport.Posix(
            target: ResolvableTargets.IPv4(addresses: [.init(host: "127.0.0.1", port: rpcPort)]), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { try await body($0) }
    }

    /// A client of swift-goim's `swiftgoim.logic.Session`.
    func withSessionClient<T: Sendable>(
        _ body: (Swiftgoim_Logic_Session.Client<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        try await withPlainClient { try await body(Swiftgoim_Logic_Session.Client(wrapping: $0)) }
    }

    /// A client of swift-goim's `swiftgoim.logic.History`.
    func withHistoryClient<T: Sendable>(
        _ body: (Swiftgoim_Logic_History.Client<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        try await withPlainClient { try await body(Swiftgoim_Logic_History.Client(wrapping: $0)) }
    }

    /// A client of swift-goim's `swiftgoim.logic.LogicBatch`.
    func withBatchClient<T: Sendable>(
        _ body: (Swiftgoim_Logic_LogicBatch.Client<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        try await withPlainClient { try await body(Swiftgoim_Logic_LogicBatch.Client(wrapping: $0)) }
    }

    // MARK: - NATS

    /// Subscribes to every push subject; `next()` returns decoded `PushMsg`s in arrival order.
    func pushSubscriber() async throws -> PushSubscriber {
        PushSubscriber(try await nats.subscribe("\(configuration.nats.subject).>"))
    }

    // MARK: - Redis

    func command(_ parts: String...) async throws -> RESPValue {
        try await redis.send(RedisCommand(parts[0], parts.dropFirst().map { .string($0) }))
    }

    func register(_ hostname: String, connCount: Int = 0, ipCount: Int = 0, weight: Int = 10, offline: Bool = false,
                  addrs: [String] = [], region: String = "") async throws {
        try await registry.register(
            CometInstance(
                hostname: hostname, rpcAddress: "127.0.0.1:3109", addrs: addrs, tcpPorts: [3101], wsPorts: [3102],
                region: region, weight: weight, offline: offline, connCount: connCount, ipCount: ipCount))
    }

    /// A unique comet name for this test.
    func comet(_ name: String) -> String { "\(name)-\(id)" }
}

/// Collects messages from a NATS subscription in the background; `next()` takes them in arrival order.
final class PushSubscriber: Sendable {
    let subscription: NATSSubscription
    private let buffer = MessageBuffer()
    private let consumer: Task<Void, Never>

    final class MessageBuffer: Sendable {
        let messages = Mutex<[NATSMessage]>([])
        func withLock<T>(_ body: (inout [NATSMessage]) -> T) -> T { messages.withLock { body(&$0) } }
    }

    init(_ subscription: NATSSubscription) {
        self.subscription = subscription
        let buffer = self.buffer
        consumer = Task {
            for await message in subscription {
                buffer.withLock { $0.append(message) }
            }
        }
    }

    deinit {
        subscription.unsubscribe()
        consumer.cancel()
    }

    /// The next raw message, failing after `timeout`.
    func nextRaw(timeout: Duration = .seconds(5)) async throws -> NATSMessage {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let message = buffer.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return message }
            guard ContinuousClock.now < deadline else { throw ConditionTimeout(what: "a message on NATS", timeout: timeout) }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The next message (subject and decoded PushMsg), failing after `timeout`.
    func next(timeout: Duration = .seconds(5)) async throws -> (subject: String, message: Goim_Logic_PushMsg) {
        let received = try await nextRaw(timeout: timeout)
        return (received.subject, try Goim_Logic_PushMsg(serializedBytes: received.payload))
    }

    /// Checks nothing (more) arrives within `window`.
    func expectNothing(within window: Duration = .milliseconds(300)) async throws {
        try await Task.sleep(for: window)
        let pending = buffer.withLock { $0.map(\.subject) }
        #expect(pending.isEmpty, "unexpected messages on \(pending)")
    }
}

/// One-shot HTTP requests to any port.
enum TestHTTP {
    static func post(port: Int, _ uri: String, _ body: String) async throws -> String {
        try await TestClient.withClient(host: "127.0.0.1", port: port) { client in
            let response = try await client.post(uri, body: ByteBuffer(string: body))
            return response.body.map { String(buffer: $0) } ?? ""
        }
    }
}


