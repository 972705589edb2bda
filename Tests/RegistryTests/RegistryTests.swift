import GoIMConfig
import Logging
import NIOCore
import Redis
import Registry
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

@Suite(.startsServers) struct RegistryTests {
    func makeRegistry(_ server: ServerProcess, ttl: Duration = .seconds(30)) -> (CometRegistry, RedisClient) {
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: server.port, connectTimeout: .seconds(5)))
        var section = RegistrySection()
        section.prefix = "test:comet:"
        section.ttl = ttl
        section.refresh = .milliseconds(100)
        return (CometRegistry(redis: redis, configuration: section), redis)
    }

    @Test func registerListAndDeregister() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (registry, redis) = makeRegistry(server)
        #expect(try await registry.instances().isEmpty)

        let a = CometInstance(hostname: "comet-a", rpcAddress: "127.0.0.1:3109", addrs: ["10.0.0.1"], tcpPorts: [3101],
                              wsPorts: [3102], connCount: 5, ipCount: 2)
        let b = CometInstance(hostname: "comet-b", rpcAddress: "127.0.0.1:3209", connCount: 7)
        try await registry.register(b)
        try await registry.register(a)
        let listed = try await registry.instances()
        #expect(listed.map(\.hostname) == ["comet-a", "comet-b"])
        #expect(listed.first == a)

        // The record is JSON with a TTL, readable by anything that speaks Redis.
        let ttl = try await redis.send(RedisCommand("TTL", [.string("test:comet:comet-a")]))
        #expect((ttl.int ?? 0) > 0 && (ttl.int ?? 0) <= 30)

        try await registry.deregister(hostname: "comet-a")
        #expect(try await registry.instances().map(\.hostname) == ["comet-b"])
    }

    @Test func expiredCometsDisappearAndArePruned() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (registry, redis) = makeRegistry(server, ttl: .seconds(2))
        try await registry.register(CometInstance(hostname: "short-lived", rpcAddress: "127.0.0.1:1"))
        let ttl = try await redis.send(RedisCommand("PTTL", [.string("test:comet:short-lived")]))
        #expect((ttl.int ?? 0) > 0 && (ttl.int ?? 0) <= 2000)
        var gone = false
        for _ in 0..<100 where !gone {
            try await Task.sleep(for: .milliseconds(100))
            gone = try await registry.instances().isEmpty
        }
        #expect(gone)
        let index = try await redis.send(RedisCommand("SMEMBERS", [.string("test:comet:index")]))
        #expect(index.array?.isEmpty == true)
    }

    @Test func registrationServiceRefreshesAndDeregistersOnShutdown() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (registry, _) = makeRegistry(server)
        let service = RegistrationService(registry: registry, refresh: .milliseconds(100), logger: Logger(label: "test")) {
            CometInstance(hostname: "comet-svc", rpcAddress: "127.0.0.1:3109", connCount: 1)
        }
        let group = ServiceGroup(services: [service], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var seen = false
            for _ in 0..<100 where !seen {
                seen = try await registry.instances().map(\.hostname) == ["comet-svc"]
                if !seen { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(seen)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(try await registry.instances().isEmpty)
    }

    /// Redis restarted without its data (here: FLUSHALL): the next refresh finds the record gone, writes it again and
    /// tells the comet once, so that it writes its sessions again; the first registration does not count.
    @Test func aRefreshThatFindsTheRecordGoneCallsRecordLost() async throws {
        let server = try await TestServers.redis()
        defer { server.stopInBackground() }
        let (registry, redis) = makeRegistry(server)
        let instance = CometInstance(hostname: "comet-lost", rpcAddress: "127.0.0.1:3109")
        #expect(try await registry.register(instance) == false)
        #expect(try await registry.register(instance) == true)

        let lost = Mutex(0)
        let service = RegistrationService(
            registry: registry, refresh: .milliseconds(100), logger: Logger(label: "test"),
            recordLost: { lost.withLock { $0 += 1 } }
        ) { instance }
        let group = ServiceGroup(services: [service], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await Task.sleep(for: .milliseconds(350))
            #expect(lost.withLock { $0 } == 0, "refreshes of a record that is there")
            _ = try await redis.send(RedisCommand("FLUSHALL", []))
            var back = false
            for _ in 0..<100 where !back {
                try await Task.sleep(for: .milliseconds(50))
                back = try await registry.instances().map(\.hostname) == ["comet-lost"]
            }
            #expect(back)
            try await Task.sleep(for: .milliseconds(300))
            #expect(lost.withLock { $0 } == 1, "one loss, one call")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test func redisDownIsAnError() async throws {
        let server = try await TestServers.redis()
        let (registry, _) = makeRegistry(server)
        await server.stop()
        await #expect(throws: (any Error).self) {
            try await registry.register(CometInstance(hostname: "x", rpcAddress: "127.0.0.1:1"))
        }
    }
}
