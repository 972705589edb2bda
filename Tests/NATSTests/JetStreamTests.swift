import NATS
import TestSupport
import Testing

@Suite("JetStream against a real nats-server", .startsServers)
struct JetStreamTests {
    static let stream = StreamConfiguration(name: "PUSH", subjects: ["goim.push.>"], duplicateWindow: .seconds(60))

    /// A connection, its JetStream context and the PUSH stream.
    func withStream<T>(_ body: (ServerProcess, JetStream) async throws -> T) async throws -> T {
        try await withNATS { server, connection in
            let jetStream = try connection.jetStream()
            try await jetStream.createOrUpdateStream(Self.stream)
            return try await body(server, jetStream)
        }
    }

    /// Fetches until `count` messages arrived or `timeout` passed.
    func fetchAll(_ consumer: PullConsumer, count: Int, timeout: Duration = .seconds(10)) async throws -> [JetStreamMessage] {
        var messages: [JetStreamMessage] = []
        let deadline = ContinuousClock.now + timeout
        while messages.count < count && ContinuousClock.now < deadline {
            messages += try await consumer.fetch(max: count - messages.count, timeout: .milliseconds(500))
        }
        return messages
    }

    @Test func createStreamThenUpdateIt() async throws {
        try await withStream { _, jetStream in
            try await jetStream.createOrUpdateStream(Self.stream)  // same config again: no error

            let noRoom = await #expect(throws: NATSError.self) {
                try await jetStream.publish("goim.room.1", payload: [1])
            }
            #expect(noRoom?.code == .noResponders)

            var changed = Self.stream
            changed.subjects.append("goim.room.>")
            changed.maxMessages = 1000
            changed.maxAge = .seconds(3600)
            try await jetStream.createOrUpdateStream(changed)
            let ack = try await jetStream.publish("goim.room.1", payload: [1])
            #expect(ack.stream == "PUSH")
        }
    }

    @Test func impossibleUpdateIsAnError() async throws {
        try await withStream { _, jetStream in
            var changed = Self.stream
            changed.storage = .memory  // the server cannot change a stream's storage
            let error = await #expect(throws: NATSError.self) { try await jetStream.createOrUpdateStream(changed) }
            #expect(error?.description.contains("create or update stream PUSH failed") == true)
            #expect(error?.jetStreamCode != nil)
        }
    }

    @Test func publishIsAcknowledgedWithIncreasingSequence() async throws {
        try await withStream { _, jetStream in
            var sequences: [UInt64] = []
            for index in 0..<5 {
                let ack = try await jetStream.publish("goim.push.keys", payload: [UInt8(index), 0])
                #expect(ack.stream == "PUSH")
                #expect(!ack.duplicate)
                sequences.append(ack.sequence)
            }
            #expect(sequences == [1, 2, 3, 4, 5])

            let first = try await jetStream.publish("goim.push.keys", payload: [9], messageID: "push-42")
            let again = try await jetStream.publish("goim.push.keys", payload: [9], messageID: "push-42")
            #expect(!first.duplicate)
            #expect(again.duplicate)
            #expect(again.sequence == first.sequence)
        }
    }

    @Test func publishWithoutStreamFailsFast() async throws {
        try await withStream { _, jetStream in
            let start = ContinuousClock.now
            let error = await #expect(throws: NATSError.self) {
                try await jetStream.publish("goim.nostream", payload: [1])
            }
            #expect(ContinuousClock.now - start < .seconds(2))
            #expect(error?.code == .noResponders)
            #expect(error?.description.contains("publish to goim.nostream failed") == true)
        }
    }

    @Test func durableKeepsWhatWasPublishedWhileNoConsumerRan() async throws {
        try await withStream { server, jetStream in
            for index in 0..<2 {
                _ = try await jetStream.publish("goim.push.room", payload: [UInt8(index)])
            }
            // A job process: consumes and acks the first two, then goes away entirely.
            let job = try await NATSConnection.connect(configuration(server))
            let first = try await job.jetStream().pullConsumer(stream: "PUSH", durable: "job", filterSubject: "goim.push.>")
            for message in try await fetchAll(first, count: 2) { try await message.ack() }
            #expect(try await first.fetch(max: 10, timeout: .milliseconds(200)).isEmpty)  // timeout: empty, no error
            await first.close()
            await job.close()

            for index in 2..<7 {
                _ = try await jetStream.publish("goim.push.room", payload: [UInt8(index), 0, 255])
            }

            // The next job process gets exactly what it missed: the durable kept its position.
            let again = try await NATSConnection.connect(configuration(server))
            let second = try await again.jetStream().pullConsumer(stream: "PUSH", durable: "job", filterSubject: "goim.push.>")
            let messages = try await fetchAll(second, count: 5)
            #expect(messages.map(\.payload) == (2..<7).map { [UInt8($0), 0, 255] })
            #expect(messages.map(\.streamSequence) == [3, 4, 5, 6, 7])
            #expect(messages.allSatisfy { $0.deliveryCount == 1 && $0.subject == "goim.push.room" })
            for message in messages { try await message.ack() }
            #expect(try await second.fetch(max: 10, timeout: .milliseconds(300)).isEmpty)
            await second.close()
            await again.close()
        }
    }

    @Test func missingAckIsRedelivered() async throws {
        try await withStream { _, jetStream in
            let consumer = try await jetStream.pullConsumer(
                stream: "PUSH", durable: "slow", filterSubject: nil, ackWait: .seconds(1))
            _ = try await jetStream.publish("goim.push.mid", payload: [42])

            let first = try await fetchAll(consumer, count: 1)
            #expect(first.first?.deliveryCount == 1)
            // No ack: after the 1 s ack wait the server delivers it again.
            let again = try await fetchAll(consumer, count: 1)
            #expect(again.first?.streamSequence == first.first?.streamSequence)
            #expect(again.first?.payload == [42])
            #expect(again.first?.deliveryCount == 2)
            try await again.first?.ack()
            #expect(try await consumer.fetch(max: 1, timeout: .milliseconds(1500)).isEmpty)
            await consumer.close()
        }
    }

    @Test func nakRedeliversAndTermDoesNot() async throws {
        try await withStream { _, jetStream in
            let consumer = try await jetStream.pullConsumer(stream: "PUSH", durable: "nak", filterSubject: "goim.push.>")
            _ = try await jetStream.publish("goim.push.a", payload: [1])

            let first = try #require(try await fetchAll(consumer, count: 1).first)
            try await first.inProgress()
            try await first.nak()
            let again = try #require(try await fetchAll(consumer, count: 1).first)
            #expect(again.streamSequence == first.streamSequence)
            #expect(again.deliveryCount == 2)

            try await again.term()
            #expect(try await consumer.fetch(max: 1, timeout: .milliseconds(500)).isEmpty)
            await consumer.close()
        }
    }

    @Test func consumersOnOneDurableShareWorkWithoutDuplicates() async throws {
        try await withStream { _, jetStream in
            let total = 200
            for index in 0..<total {
                _ = try await jetStream.publish("goim.push.shared", payload: Array("\(index)".utf8))
            }
            let consumers = [
                try await jetStream.pullConsumer(stream: "PUSH", durable: "shared", filterSubject: "goim.push.>"),
                try await jetStream.pullConsumer(stream: "PUSH", durable: "shared", filterSubject: "goim.push.>"),
            ]
            let received = Locked<[Int: [UInt64]]>([:])
            let count = { @Sendable in received.value.values.reduce(0) { $0 + $1.count } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, consumer) in consumers.enumerated() {
                    group.addTask {
                        let deadline = ContinuousClock.now + .seconds(15)
                        while count() < total && ContinuousClock.now < deadline {
                            for message in try await consumer.fetch(max: 5, timeout: .milliseconds(300)) {
                                try await message.ack()
                                received.withLock { $0[index, default: []].append(message.streamSequence) }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let all = received.value.values.flatMap { $0 }
            #expect(all.count == total)
            #expect(Set(all).count == total)
            #expect(received.value[0]?.isEmpty == false)
            #expect(received.value[1]?.isEmpty == false)
            for consumer in consumers { await consumer.close() }
        }
    }

    @Test func publishingWorksAgainAfterServerRestart() async throws {
        try await withStream { server, jetStream in
            let consumer = try await jetStream.pullConsumer(stream: "PUSH", durable: "restart", filterSubject: nil)
            _ = try await jetStream.publish("goim.push.before", payload: [1])

            await server.stop()
            #expect(await eventually { !jetStream.connection.isConnected })
            try await server.start()
            #expect(await eventually { jetStream.connection.isConnected })

            // JetStream needs a moment after the server accepts connections again.
            var ack: PublishAck?
            let deadline = ContinuousClock.now + .seconds(10)
            while ack == nil && ContinuousClock.now < deadline {
                ack = try? await jetStream.publish("goim.push.after", payload: [2])
                if ack == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(ack?.sequence == 2)  // the file store kept message 1

            let messages = try await fetchAll(consumer, count: 2)
            #expect(messages.map(\.payload) == [[1], [2]])
            for message in messages { try await message.ack() }
            await consumer.close()
        }
    }
}
