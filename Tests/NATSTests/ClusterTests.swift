import NATS
import TestSupport
import Testing

/// The client against a three-node nats-server cluster (Debian's 2.9.10, JetStream on each): replicas, a stream
/// leader killed with SIGKILL, the connected server killed. docs/nats-cluster.md.
@Suite("NATS client against a three-node JetStream cluster", .serialized, .startsServers)
struct ClusterTests {
    static func withCluster<T>(_ body: (NATSCluster, NATSConnection) async throws -> T) async throws -> T {
        let cluster = try await NATSCluster.start()
        do {
            var configuration = NATSConfiguration(urls: cluster.urls, name: "cluster-test")
            configuration.reconnectWait = .milliseconds(100)
            let connection = try await NATSConnection.connect(configuration)
            do {
                let result = try await body(cluster, connection)
                await connection.close()
                await cluster.stop()
                return result
            } catch {
                await connection.close()
                throw error
            }
        } catch {
            await cluster.stop()
            throw error
        }
    }

    @Test("createOrUpdateStream creates the stream with its replicas and changes them on an existing stream")
    func replicasAreCreatedAndUpdated() async throws {
        try await Self.withCluster { cluster, connection in
            let jetStream = try connection.jetStream()
            var config = StreamConfiguration(name: "REPL", subjects: ["repl.>"], replicas: 1)
            try await jetStream.createOrUpdateStream(config)
            #expect(cluster.streamReplicas("REPL") == 1)
            config.replicas = 3
            try await jetStream.createOrUpdateStream(config)
            try await waitUntil("3 replicas", timeout: .seconds(20)) { cluster.streamReplicas("REPL") == 3 }
            config.replicas = 1
            try await jetStream.createOrUpdateStream(config)
            try await waitUntil("1 replica", timeout: .seconds(20)) { cluster.streamReplicas("REPL") == 1 }
        }
    }

    @Test("R3: the stream leader killed; publishes retried with the same message id are stored once and the durable pull consumer bound before goes on")
    func streamLeaderKilled() async throws {
        try await Self.withCluster { cluster, connection in
            let jetStream = try connection.jetStream(requestTimeout: .seconds(2))
            try await jetStream.createOrUpdateStream(StreamConfiguration(name: "KILL", subjects: ["kill.>"], replicas: 3))
            let consumer = try await jetStream.pullConsumer(stream: "KILL", durable: "d", filterSubject: nil, ackWait: .seconds(5))
            for id in 0..<10 { _ = try await jetStream.publish("kill.x", payload: Array("\(id)".utf8), messageID: "m\(id)") }

            let leader = try #require(cluster.streamLeader("KILL"))
            try await #require(cluster.node(named: leader)).process.kill9()
            let killedAt = ContinuousClock.now
            // Each of m5...m14 is published until acknowledged (m5...m9 again: they are stored already).
            var failures: [String] = []
            var duplicates = 0
            for id in 5..<15 {
                while true {
                    do {
                        let ack = try await jetStream.publish(
                            "kill.x", payload: Array("\(id)".utf8), messageID: "m\(id)", timeout: .milliseconds(500))
                        if ack.duplicate { duplicates += 1 }
                        break
                    } catch let error as NATSError where error.isTransient {
                        failures.append(error.code.name)
                        try #require(ContinuousClock.now - killedAt < .seconds(30), "no new leader: \(failures)")
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
            }
            #expect(duplicates == 5, "m5...m9 were stored before the kill: the new leader knows their ids")
            #expect(cluster.streamLeader("KILL") != leader)

            var received: [String] = []
            let deadline = ContinuousClock.now + .seconds(30)
            while received.count < 15 && ContinuousClock.now < deadline {
                do {
                    for message in try await consumer.fetch(max: 15, timeout: .seconds(1)) {
                        received.append(String(decoding: message.payload, as: UTF8.self))
                        try? await message.ack()
                    }
                } catch let error as NATSError where error.isTransient {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(received == (0..<15).map { "\($0)" }, "each message once, in order; failures while electing: \(failures)")
            await consumer.close()
        }
    }

    @Test("the connected server killed: a request waiting for its reply fails at once, and the connection goes on with another server")
    func connectedServerKilled() async throws {
        try await Self.withCluster { cluster, connection in
            // A subscriber that never answers, on another connection to another server, keeps the request waiting.
            let server = try #require(cluster.nodes(servingClient: "cluster-test").first)
            let other = try #require(cluster.nodes.first { $0.name != server.name })
            let silent = try await NATSConnection.connect(NATSConfiguration(urls: [other.url]))
            let subscription = try await silent.subscribe("silent")  // kept: its deinit unsubscribes
            // The subscription has reached the other servers once a request there times out instead of finding no responders.
            try await waitUntil("the silent subscriber known cluster-wide") {
                do {
                    _ = try await connection.request("silent", payload: [], timeout: .milliseconds(200))
                    return false
                } catch let error as NATSError {
                    return error.code == .timeout
                }
            }

            let waiting = Task { () -> (NATSError?, Duration) in
                let start = ContinuousClock.now
                do {
                    _ = try await connection.request("silent", payload: [], timeout: .seconds(20))
                    return (nil, .now - start)
                } catch let error as NATSError {
                    return (error, .now - start)
                } catch {
                    return (nil, .now - start)
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            await server.process.kill9()
            let (error, waited) = await waiting.value
            #expect(error?.code == .connectionDisconnected, "\(String(describing: error))")
            #expect(waited < .seconds(10), "failed after \(waited), not at its 20 s timeout")
            try await waitUntil("reconnected", timeout: .seconds(20)) { connection.isConnected }
            #expect(cluster.nodes(servingClient: "cluster-test").allSatisfy { $0.name != server.name })
            try await connection.flush()
            subscription.unsubscribe()
            await silent.close()
        }
    }

    @Test("R3: the server a pull consumer's connection uses, leading the consumer too, killed while it fetches and acks: every message arrives")
    func consumerServerAndLeaderKilled() async throws {
        try await Self.withCluster { cluster, connection in
            let jetStream = try connection.jetStream(requestTimeout: .seconds(2))
            try await jetStream.createOrUpdateStream(StreamConfiguration(name: "PULL", subjects: ["pull.>"], replicas: 3))
            let consumer = try await jetStream.pullConsumer(stream: "PULL", durable: "d", filterSubject: nil, ackWait: .seconds(2))
            let server = try #require(cluster.nodes(servingClient: "cluster-test").first)
            // Put the consumer's leader on that server.
            try #require(try await cluster.moveConsumerLeader(stream: "PULL", durable: "d", to: server.name))

            let other = try #require(cluster.nodes.first { $0.name != server.name })
            let publisher = try await NATSConnection.connect(NATSConfiguration(urls: [other.url] + cluster.urls))
            let publisherStream = try publisher.jetStream(requestTimeout: .seconds(1))
            let total = 1500
            let publishing = Task {
                for id in 0..<total {
                    while true {
                        do {
                            _ = try await publisherStream.publish("pull.x", payload: Array("\(id)".utf8), messageID: "p\(id)")
                            break
                        } catch { try? await Task.sleep(for: .milliseconds(50)) }
                    }
                    if id % 50 == 0 { try? await Task.sleep(for: .milliseconds(30)) }
                }
            }
            let killer = Task {
                try? await Task.sleep(for: .milliseconds(400))
                await server.process.kill9()
            }
            var received = Set<String>()
            let deadline = ContinuousClock.now + .seconds(60)
            while received.count < total && ContinuousClock.now < deadline {
                let messages: [JetStreamMessage]
                do {
                    messages = try await consumer.fetch(max: 64, timeout: .milliseconds(200))
                } catch {
                    try await Task.sleep(for: .milliseconds(50))
                    continue
                }
                // Acks run concurrently, as job's settlers do.
                await withTaskGroup(of: Void.self) { group in
                    for message in messages {
                        received.insert(String(decoding: message.payload, as: UTF8.self))
                        group.addTask { try? await message.ack() }
                    }
                }
            }
            await publishing.value
            await killer.value
            #expect(received.count == total)
            await consumer.close()
            await publisher.close()
        }
    }
}
