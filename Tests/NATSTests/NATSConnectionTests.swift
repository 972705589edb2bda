import Logging
import NATS
import TestSupport
import Testing

@Suite("NATS core against a real nats-server", .startsServers)
struct NATSConnectionTests {
    @Test func publishSubscribeKeepsBinaryPayloadAndHeaders() async throws {
        try await withNATS { _, connection in
            let subscription = try await connection.subscribe("goim.test.>")
            let payload: [UInt8] = [0, 1, 2, 0, 255, 0x0D, 0x0A, 0] + Array(repeating: 0xAB, count: 70_000)
            try await connection.publish("goim.test.bin", payload: payload, headers: ["Goim-Op": "9"])
            try await connection.publish("goim.test.empty", payload: [])

            let messages = await collect(subscription, count: 2)
            #expect(messages.count == 2)
            #expect(messages.first?.subject == "goim.test.bin")
            #expect(messages.first?.payload == payload)
            #expect(messages.first?.headers["Goim-Op"] == ["9"])
            #expect(messages.last?.subject == "goim.test.empty")
            #expect(messages.last?.payload == [])
        }
    }

    @Test func connectsPastDeadURLs() async throws {
        let server = try await TestServers.nats(jetStream: false)
        try await server.withRunning { server in
            let dead = (0..<3).map { _ in "nats://127.0.0.1:\(TestServers.freePort())" }
            let configuration = NATSConfiguration(urls: dead + ["nats://127.0.0.1:\(server.port)"])
            let connection = try await NATSConnection.connect(configuration)
            #expect(connection.isConnected)
            await connection.close()
            #expect(!connection.isConnected)
        }
    }

    @Test func connectToNothingFailsClearly() async throws {
        let configuration = NATSConfiguration(urls: ["nats://127.0.0.1:\(TestServers.freePort())"])
        let error = await #expect(throws: NATSError.self) { try await NATSConnection.connect(configuration) }
        #expect(error?.code == .noServer)
        #expect(error?.description.contains("connect to nats://127.0.0.1") == true)
    }

    @Test func queueGroupDeliversEachMessageOnce() async throws {
        try await withNATS { _, connection in
            let first = try await connection.subscribe("goim.queue", queue: "workers")
            let second = try await connection.subscribe("goim.queue", queue: "workers")
            let total = 200
            for index in 0..<total {
                try await connection.publish("goim.queue", payload: bytes("\(index)"))
            }
            try await connection.flush()

            // Each member collects until the two together have every message.
            let seen = Locked<[Int: [String]]>([:])
            let done = { @Sendable in seen.value.values.reduce(0) { $0 + $1.count } >= total }
            await withTaskGroup(of: Void.self) { group in
                for (member, subscription) in [first, second].enumerated() {
                    group.addTask {
                        for await message in subscription {
                            seen.withLock { $0[member, default: []].append(String(decoding: message.payload, as: UTF8.self)) }
                            if done() { break }
                        }
                    }
                }
                group.addTask { _ = await eventually(timeout: .seconds(5)) { done() } }
                await group.next()
                group.cancelAll()
            }
            let result = seen.value
            let all = result.values.flatMap { $0 }
            #expect(all.count == total)
            #expect(Set(all).count == total)
            #expect(result[0]?.isEmpty == false)
            #expect(result[1]?.isEmpty == false)
        }
    }

    @Test func requestReply() async throws {
        try await withNATS { _, connection in
            let service = try await connection.subscribe("goim.echo")
            let responder = Task {
                for await request in service {
                    guard let reply = request.reply else { continue }
                    try await connection.publish(reply, payload: request.payload.reversed())
                }
            }
            defer { responder.cancel() }

            let reply = try await connection.request("goim.echo", payload: [1, 0, 2], timeout: .seconds(2))
            #expect(reply.payload == [2, 0, 1])

            let error = await #expect(throws: NATSError.self) {
                try await connection.request("goim.nobody", payload: [], timeout: .seconds(2))
            }
            #expect(error?.code == .noResponders)
            #expect(error?.description.contains("request to goim.nobody failed") == true)
        }
    }

    @Test func fullBufferBacksUpIntoLibnatsThenDrops() async throws {
        try await withNATS(configure: { $0.maxPendingMessages = 16 }) { server, connection in
            let subscription = try await connection.subscribe("goim.slow", bufferSize: 4)
            let publisher = try await NATSConnection.connect(configuration(server))
            for index in 0..<200 {
                try await publisher.publish("goim.slow", payload: bytes("\(index)"))
            }
            try await publisher.flush()
            await publisher.close()

            // Nobody reads: at most 4 wait in the buffer, 1 in the blocked callback and 16 in
            // libnats' queue; libnats drops all the others (a slow consumer).
            #expect(await eventually { subscription.droppedMessages >= 200 - 4 - 1 - 16 })
            // libnats' delivery thread may still be handing over the oldest ones on a busy machine.
            #expect(await eventually { subscription.bufferedMessages == 4 })
            #expect(subscription.droppedMessages <= 200 - 16)

            subscription.unsubscribe()
            var received: [Int] = []
            for await message in subscription {
                received.append(Int(String(decoding: message.payload, as: UTF8.self)) ?? -1)
            }
            #expect(received == [0, 1, 2, 3])  // the buffer kept the oldest; the rest went with the subscription
        }
    }

    @Test func reconnectsAfterServerRestart() async throws {
        try await withNATS { server, connection in
            let subscription = try await connection.subscribe("goim.after")
            await server.stop()
            #expect(await eventually { !connection.isConnected })
            try await server.start()
            #expect(await eventually { connection.isConnected })

            // The subscription was re-sent on reconnect.
            try await connection.publish("goim.after", payload: [7])
            let messages = await collect(subscription, count: 1)
            #expect(messages.first?.payload == [7])
        }
    }

    @Test func drainClosesTheConnection() async throws {
        try await withNATS { _, connection in
            let subscription = try await connection.subscribe("goim.drain")
            try await connection.publish("goim.drain", payload: [1])
            try await connection.drain(timeout: .seconds(2))
            #expect(!connection.isConnected)
            var received: [[UInt8]] = []
            for await message in subscription { received.append(message.payload) }  // ends: the drain closed it
            #expect(received == [[1]])
            let error = await #expect(throws: NATSError.self) { try await connection.flush() }
            #expect(error?.code == .connectionClosed)
        }
    }

    @Test func runAsServiceClosesWhenCancelled() async throws {
        try await withNATS { _, connection in
            let service = Task { try await connection.run() }
            try await Task.sleep(for: .milliseconds(100))
            #expect(connection.isConnected)
            service.cancel()
            try await service.value
            #expect(!connection.isConnected)
        }
    }
}

/// The warnings a connection logs: a disconnection we caused (close, drain) is not one; a lost server is.
@Suite("NATS connection log", .startsServers)
struct NATSConnectionLogTests {
    /// Records the level and text of every message.
    struct Capture: LogHandler {
        let lines: Locked<[(Logger.Level, String)]>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            lines.withLock { $0.append((event.level, "\(event.message)")) }
        }
    }

    static func logger(_ lines: Locked<[(Logger.Level, String)]>) -> Logger {
        Logger(label: "goim.nats.test", factory: { _ in Capture(lines: lines) })
    }

    static func warnings(_ lines: Locked<[(Logger.Level, String)]>) -> [String] {
        lines.value.filter { $0.0 >= .warning }.map(\.1)
    }

    @Test func closeAndDrainLogNoWarning() async throws {
        let server = try await TestServers.nats(jetStream: false)
        try await server.withRunning { server in
            for drain in [false, true] {
                let lines = Locked<[(Logger.Level, String)]>([])
                let connection = try await NATSConnection.connect(configuration(server), logger: Self.logger(lines))
                if drain { try await connection.drain(timeout: .seconds(2)) } else { await connection.close() }
                #expect(Self.warnings(lines) == [], "drain: \(drain)")
            }
        }
    }

    @Test func aLostServerIsAWarning() async throws {
        let server = try await TestServers.nats(jetStream: false)
        try await server.withRunning { server in
            let lines = Locked<[(Logger.Level, String)]>([])
            let connection = try await NATSConnection.connect(configuration(server), logger: Self.logger(lines))
            await server.stop()
            #expect(await eventually { Self.warnings(lines).contains("NATS disconnected, reconnecting") })
            await connection.close()
        }
    }
}
