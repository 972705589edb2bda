import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import GoIMClient
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import Logging
import NIOCore
import NIOPosix
import Redis
import Registry
import TestSupport
import TestLogic
import Testing

@testable import Comet

extension CometSuite {
    @Suite("Lifecycle: online counts, registration, shutdown", .startsServers)
    struct LifecycleTests {
        @Test("RenewOnline reaches Logic uncompressed with the room counts; the cluster counts flow into heartbeat replies")
        func renewOnline() async throws {
            let logic = TestLogic()
            logic.allRoomCount.withLock { $0 = ["live://big": 42] }
            try await withComet(logic: logic, configure: { $0.onlineInterval = .milliseconds(100) }) { comet in
                let a = try await comet.client(auth: auth(key: "on-1", room: "live://big"))
                let b = try await comet.client(.webSocket(), auth: auth(key: "on-2", room: "live://big"))
                let c = try await comet.client(auth: auth(key: "on-3", room: "live://small"))
                try await comet.logic.wait { calls in
                    calls.renews.contains { $0.roomCount == ["live://big": 2, "live://small": 1] }
                }
                let renew = try #require(comet.logic.calls.renews.last)
                #expect(renew.server == "test-comet")
                // Uncompressed, and no compressed replies invited: grpc-swift-nio-transport 2.9.2 leaks the zlib
                // state of every compressed reply (~7 kB per call; docs/compatibility.md).
                #expect(renew.encoding == nil || renew.encoding == "identity")
                #expect(!renew.acceptEncoding.contains("gzip") && !renew.acceptEncoding.contains("deflate"))
                // Wait for the reply to be applied: the next report comes after it.
                let reported = comet.logic.calls.renews.count
                try await comet.logic.wait { $0.renews.count > reported }
                #expect(try await a.heartbeat() == 42)
                #expect(try await b.heartbeat() == 42)
                #expect(try await c.heartbeat() == 1)  // absent from Logic's answer: the local count
            }
        }

        @Test("graceful shutdown closes every client and disconnects each at Logic once")
        func gracefulShutdownDisconnectsEveryone() async throws {
            let keys = (0..<20).map { "bye-\($0)" }
            let clients = ClientList()
            try await withComet(afterShutdown: { logic in
                for key in keys { #expect(logic.calls.disconnects(of: key) == 1) }
                #expect(logic.calls.disconnects.count == keys.count)
                for client in clients.all { try await client.waitUntilClosed(timeout: .seconds(2)) }
            }) { comet in
                for (index, key) in keys.enumerated() {
                    clients.append(try await comet.client(index % 2 == 0 ? .tcp : .webSocket(), auth: auth(mid: Int64(index), key: key, room: "live://z")))
                }
                // One unauthenticated connection: closed too, without Disconnect.
                clients.append(try await GoIMClient.connect(port: comet.tcpPort))
                try await comet.waitForStatistics { $0.connections == keys.count }
            }
        }

        @Test("registration: the comet appears in the Redis registry with its ports and leaves it at shutdown")
        func registration() async throws {
            let redisServer = try await TestServers.redis()
            defer { redisServer.stopInBackground() }
            let redis = RedisClient(configuration: RedisConfiguration(port: redisServer.port, connectTimeout: .seconds(5)))
            let registry = CometRegistry(redis: redis, configuration: RegistrySection())
            var options = CometServer.Options()
            options.sweepInterval = .milliseconds(50)
            let port = redisServer.port
            try await withComet(
                options: options,
                configure: {
                    $0.redis.addr = HostPort(host: "127.0.0.1", port: port)
                    $0.registry.refresh = .milliseconds(200)
                    $0.env.addrs = ["203.0.113.7"]
                },
                afterShutdown: { _ in
                    let remaining = try await registry.instances()
                    #expect(remaining.isEmpty)
                }
            ) { comet in
                try await waitUntilAsync {
                    (try? await registry.instances().first?.connCount) == 0
                }
                let instance = try #require(try await registry.instances().first)
                #expect(instance.hostname == "test-comet")
                #expect(instance.tcpPorts == comet.addresses.tcp)
                #expect(instance.wsPorts == comet.addresses.webSocket)
                #expect(instance.rpcAddress == "127.0.0.1:\(comet.addresses.rpc)")
                #expect(instance.addrs == ["203.0.113.7"])

                let client = try await comet.client(auth: auth(key: "counted"))
                try await waitUntilAsync { (try? await registry.instances().first?.connCount) == 1 }
                #expect(try await registry.instances().first?.ipCount == 1)
                await client.close()
            }
        }

        @Test("a second comet with a live comet's host name stops with a clear error and leaves the record alone; its own record from before a restart does not stop it")
        func duplicateHostname() async throws {
            let redisServer = try await TestServers.redis()
            defer { redisServer.stopInBackground() }
            let redis = RedisClient(configuration: RedisConfiguration(port: redisServer.port, connectTimeout: .seconds(5)))
            let registry = CometRegistry(redis: redis, configuration: RegistrySection())
            let other = CometInstance(hostname: "test-comet", rpcAddress: "10.9.8.7:3109")
            try await registry.register(other)
            let port = redisServer.port
            var options = CometServer.Options()
            options.sweepInterval = .milliseconds(50)
            await #expect {
                try await withComet(
                    options: options,
                    configure: {
                        $0.redis.addr = HostPort(host: "127.0.0.1", port: port)
                        $0.registry.refresh = .milliseconds(200)
                    }
                ) { comet in
                    // The comet stops itself once registration finds the other record: its listeners close.
                    try await waitUntil("the comet to stop", timeout: .seconds(15)) {
                        !ServerProcess.canConnect(port: comet.tcpPort)
                    }
                }
            } throws: { error in
                "\(error)".contains("GOIM_ENV_HOST")
            }
            #expect(try await registry.instance(hostname: "test-comet")?.rpcAddress == "10.9.8.7:3109")

            // The same gRPC address: a restarted comet finding its own record starts as usual.
            let rpcPort = TestServers.freePort()
            try await registry.register(CometInstance(hostname: "test-comet", rpcAddress: "127.0.0.1:\(rpcPort)", connCount: 99))
            try await withComet(
                options: options,
                configure: {
                    $0.redis.addr = HostPort(host: "127.0.0.1", port: port)
                    $0.registry.refresh = .milliseconds(200)
                    $0.rpcServer.addr = HostPort(host: "127.0.0.1", port: rpcPort)
                }
            ) { _ in
                try await waitUntilAsync { (try? await registry.instance(hostname: "test-comet"))?.connCount == 0 }
            }
        }

        @Test("the comet executable starts from a config file, serves a client and exits on SIGTERM")
        func executable() async throws {
            guard let path = try? TestServers.builtProductPath("comet") else {
                // Built by `swift build`; `--filter` runs may not have it.
                return
            }
            _ = path
            let logic = TestLogic()
            let logicServer = GRPCTestServer(logic: logic)
            let logicPort = try await logicServer.start()
            defer { logicServer.stop() }
            let directory = try TestServers.temporaryDirectory("comet-exe")
            let tcpPort = TestServers.freePort()
            let config = directory.appendingPathComponent("comet.toml")
            try """
            eventLoopThreads = 1
            [log]
            level = "debug"
            [env]
            host = "exe-comet"
            [tcp]
            bind = ["127.0.0.1:\(tcpPort)"]
            [websocket]
            bind = ["127.0.0.1:\(TestServers.freePort())"]
            [rpcServer]
            addr = "127.0.0.1:\(TestServers.freePort())"
            [rpcClient]
            addrs = ["127.0.0.1:\(logicPort)"]
            [registry]
            refresh = "1s"
            [redis]
            addr = "127.0.0.1:1"
            [monitor]
            addr = "127.0.0.1:\(TestServers.freePort())"
            """.write(to: config, atomically: true, encoding: .utf8)
            let process = try TestServers.executable("comet", arguments: ["--config", config.path], port: tcpPort)
            try await process.start()
            let client = try await GoIMClient.connect(port: tcpPort)
            try await client.auth(auth(key: "exe"))
            #expect(try await client.heartbeat() == 0)
            await process.stop()
            try await client.waitUntilClosed()
            #expect(logic.calls.disconnects(of: "exe") == 1, "comet output:\n\(process.output)")
        }
    }
}

final class ClientList: Sendable {
    private let clients = Mutex<[GoIMClient]>([])
    func append(_ client: GoIMClient) { clients.withLock { $0.append(client) } }
    var all: [GoIMClient] { clients.withLock { $0 } }
}

func waitUntilAsync(timeout: Duration = .seconds(10), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while await !condition() {
        guard ContinuousClock.now < deadline else { throw TestFailure("condition not met in time") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// The test Logic on its own, for the executable test.
final class GRPCTestServer: Sendable {
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let task = Mutex<Task<Void, any Error>?>(nil)

    init(logic: TestLogic) {
        server = GRPCServer(
            transport: .http2NIOPosix(
                address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext,
                config: .defaults { $0.compression.enabledAlgorithms = .all }),
            services: [logic])
    }

    func start() async throws -> Int {
        let server = self.server
        task.withLock { $0 = Task { try await server.serve() } }
        guard let port = try await server.listeningAddress?.ipv4?.port else { throw TestFailure("no port") }
        return port
    }

    func stop() {
        server.beginGracefulShutdown()
    }
}

extension CometSuite {
    @Suite("Whitelist")
    struct WhitelistTests {
        @Test("whitelisted mids are traced step by step into whiteLog; others are not")
        func whitelistTrace() async throws {
            let directory = try TestServers.temporaryDirectory("comet-white")
            let path = directory.appendingPathComponent("white.log").path
            try await withComet(configure: {
                $0.whitelist.whitelist = [77]
                $0.whitelist.whiteLog = path
            }) { comet in
                let traced = try await comet.client(auth: auth(mid: 77, key: "traced", room: "live://white"))
                let plain = try await comet.client(auth: auth(mid: 78, key: "plain", room: "live://white"))
                try await traced.heartbeat()
                try await plain.heartbeat()
                try await comet.broadcastRoom("live://white", body: "seen")
                _ = try await traced.receive()
                _ = try await plain.receive()
                await traced.close()
                try await comet.waitForStatistics { $0.connections == 1 }
            }
            let log = try String(contentsOfFile: path, encoding: .utf8)
            #expect(log.contains("mid:77 key:traced"))
            #expect(log.contains("auth ok room:live://white"))
            #expect(log.contains("heartbeat reply online:2"))
            #expect(log.contains("push "))
            #expect(log.contains("closed: closed by peer"))
            #expect(!log.contains("mid:78"))
        }
    }
}
