import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMConfig
import GoIMProtocol
import GoIMRPC
import NIOPosix
import Synchronization
import TestSupport
import Testing

import Logging
import TestLogic

@testable import LogicClient

@Suite("Calls to Logic: batching")
struct LogicClientTests {
    @Suite("CallBatcher")
    struct Batcher {
        /// A send function that records batches and waits for `gate` before answering (the request doubled).
        final class Recorder: Sendable {
            let batches = Mutex<[[Int]]>([])
            let gate = Mutex<CheckedContinuation<Void, Never>?>(nil)
            let blocked = Mutex(true)

            func send(_ requests: [Int]) async throws -> [Result<Int, any Error>] {
                batches.withLock { $0.append(requests) }
                if blocked.withLock({ $0 }) {
                    await withCheckedContinuation { continuation in gate.withLock { $0 = continuation } }
                }
                if requests.contains(-1) { throw TestFailure("batch failed") }
                return requests.map { $0 == 13 ? .failure(TestFailure("unlucky")) : .success($0 * 2) }
            }

            func open() {
                blocked.withLock { $0 = false }
                gate.withLock { $0?.resume(); $0 = nil }
            }
        }

        @Test("a lone call goes at once; calls arriving meanwhile leave together, each gets its own result")
        func gathers() async throws {
            let recorder = Recorder()
            let batcher = CallBatcher<Int, Int>(lanes: 1, maxBatch: 100) { try await recorder.send($0) }
            async let first = batcher.call(1)
            try await waitUntil { recorder.batches.withLock { $0.count } == 1 }
            #expect(recorder.batches.withLock { $0 } == [[1]])
            // The lane is busy: these queue and go as one batch.
            let results = Task {
                try await withThrowingTaskGroup(of: (Int, Result<Int, TestFailure>).self) { group in
                    for value in 2...20 {
                        group.addTask {
                            do { return (value, .success(try await batcher.call(value))) } catch let error as TestFailure {
                                return (value, .failure(error))
                            }
                        }
                    }
                    var all: [Int: Result<Int, TestFailure>] = [:]
                    for try await (value, result) in group { all[value] = result }
                    return all
                }
            }
            try await waitUntil("19 calls queued behind the busy lane") { batcher.waiting == 19 }
            recorder.open()
            #expect(try await first == 2)
            let all = try await results.value
            for value in 2...20 where value != 13 {
                #expect(try all[value]?.get() == value * 2)
            }
            guard case .failure(let error)? = all[13] else {
                Issue.record("13 should fail alone")
                return
            }
            #expect(error.description == "unlucky")
            let batches = recorder.batches.withLock { $0 }
            #expect(batches.count == 2, "\(batches)")
            #expect(batches.last?.sorted() == Array(2...20))
        }

        @Test("a batch that fails fails its own callers only; batches never exceed maxBatch")
        func failureAndLimit() async throws {
            let recorder = Recorder()
            recorder.open()
            let batcher = CallBatcher<Int, Int>(lanes: 2, maxBatch: 3) { try await recorder.send($0) }
            await #expect(throws: TestFailure.self) { try await batcher.call(-1) }
            #expect(try await batcher.call(5) == 10)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for value in 100..<150 {
                    group.addTask {
                        let doubled = try await batcher.call(value)
                        #expect(doubled == value * 2)
                    }
                }
                try await group.waitForAll()
            }
            #expect(recorder.batches.withLock { $0 }.allSatisfy { $0.count <= 3 })
        }
    }

    @Test("against goim's Logic (no LogicBatch) concurrent Connects and Disconnects fall back to one call each")
    func fallsBackToGoim() async throws {
        let logic = TestLogic()
        try await withLogicServer(services: [logic]) { port in
            let client = try GRPCLogicClient(
                addresses: [HostPort(host: "127.0.0.1", port: port)], timeout: .seconds(5), batchSize: 64,
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: testLogger)
            try await run(client) {
                for round in 0..<2 {
                    let replies = try await connectAll(client, mids: Array(Int64(round * 100 + 1)...Int64(round * 100 + 40)))
                    #expect(replies.map(\.mid) == Array(Int64(round * 100 + 1)...Int64(round * 100 + 40)))
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for mid in 1...30 { group.addTask { try await client.disconnect(mid: Int64(mid), key: "k\(mid)", server: "c") } }
                    try await group.waitForAll()
                }
            }
            #expect(logic.calls.connects.count == 80)
            #expect(logic.calls.disconnects.count == 30)
        }
    }

    @Test("against swift-goim's Logic concurrent Connects go in batches, each reply or error reaches its caller")
    func batches() async throws {
        let logic = TestLogic()
        let batchLogic = TestBatchLogic(logic: logic)
        try await withLogicServer(services: [logic, batchLogic]) { port in
            let client = try GRPCLogicClient(
                addresses: [HostPort(host: "127.0.0.1", port: port)], timeout: .seconds(5), batchSize: 16,
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: testLogger)
            try await run(client) {
                let mids = Array(Int64(1)...Int64(60))
                let results = try await withThrowingTaskGroup(of: (Int64, Result<Goim_Logic_ConnectReply, RPCError>).self) { group in
                    for mid in mids {
                        group.addTask {
                            // mid 7 sends a body goim cannot decode: only that call fails.
                            let token = mid == 7 ? #"{"mid":"7"}"# : #"{"mid":\#(mid),"key":"k\#(mid)","room_id":"r"}"#
                            do {
                                return (mid, .success(try await client.connect(server: "c", cookie: "", token: Data(token.utf8))))
                            } catch let error as RPCError {
                                return (mid, .failure(error))
                            }
                        }
                    }
                    var all: [Int64: Result<Goim_Logic_ConnectReply, RPCError>] = [:]
                    for try await (mid, result) in group { all[mid] = result }
                    return all
                }
                for mid in mids where mid != 7 {
                    let reply = try #require(try? results[mid]?.get())
                    #expect(reply.mid == mid && reply.key == "k\(mid)" && reply.roomID == "r")
                }
                guard case .failure(let error)? = results[7] else {
                    Issue.record("mid 7 should have failed")
                    return
                }
                #expect(error.code == .unknown)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for mid in mids { group.addTask { try await client.disconnect(mid: mid, key: "k\(mid)", server: "c") } }
                    try await group.waitForAll()
                }
            }
            let sizes = batchLogic.connectBatchSizes.withLock { $0 }
            #expect(sizes.contains { $0 > 1 }, "\(sizes)")
            #expect(sizes.allSatisfy { $0 <= 16 })
            #expect(logic.calls.connects.count == 59)
            #expect(logic.calls.failedConnects == 1)
            #expect(logic.calls.disconnects.count == 60)
        }
    }

    private func connectAll(_ client: GRPCLogicClient, mids: [Int64]) async throws -> [Goim_Logic_ConnectReply] {
        try await withThrowingTaskGroup(of: Goim_Logic_ConnectReply.self) { group in
            for mid in mids {
                group.addTask {
                    try await client.connect(server: "c", cookie: "", token: Data(#"{"mid":\#(mid),"key":"k\#(mid)"}"#.utf8))
                }
            }
            var replies: [Goim_Logic_ConnectReply] = []
            for try await reply in group { replies.append(reply) }
            return replies.sorted { $0.mid < $1.mid }
        }
    }

    private func run(_ client: GRPCLogicClient, _ body: () async throws -> Void) async throws {
        let task = Task { try await client.run() }
        defer { task.cancel() }
        try await body()
    }

    private func withLogicServer(services: [any RegistrableRPCService], _ body: (Int) async throws -> Void) async throws {
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext), services: services)
        let task = Task { try await server.serve() }
        defer {
            server.beginGracefulShutdown()
            task.cancel()
        }
        guard let port = try await server.listeningAddress?.ipv4?.port else { throw TestFailure("test Logic did not start") }
        try await body(port)
    }
}

/// swift-goim's `LogicBatch` in front of a `TestLogic`: each item handled by the goim service's method.
final class TestBatchLogic: Swiftgoim_Logic_LogicBatch.SimpleServiceProtocol {
    let logic: TestLogic
    let connectBatchSizes = Mutex<[Int]>([])

    init(logic: TestLogic) {
        self.logic = logic
    }

    func connectBatch(request: Swiftgoim_Logic_ConnectBatchReq, context: ServerContext) async throws -> Swiftgoim_Logic_ConnectBatchReply {
        connectBatchSizes.withLock { $0.append(request.requests.count) }
        var reply = Swiftgoim_Logic_ConnectBatchReply()
        for item in request.requests {
            var result = Swiftgoim_Logic_ConnectResult()
            do {
                result.reply = try await logic.connect(request: item, context: context)
            } catch let error as RPCError {
                result.status.code = Int32(error.code.rawValue)
                result.status.message = error.message
            }
            reply.results.append(result)
        }
        return reply
    }

    func disconnectBatch(request: Swiftgoim_Logic_DisconnectBatchReq, context: ServerContext) async throws
        -> Swiftgoim_Logic_DisconnectBatchReply
    {
        var reply = Swiftgoim_Logic_DisconnectBatchReply()
        for item in request.requests {
            var result = Swiftgoim_Logic_DisconnectResult()
            result.reply = try await logic.disconnect(request: item, context: context)
            reply.results.append(result)
        }
        return reply
    }
}

private let testLogger: Logger = {
    var logger = Logger(label: "goim.logic-client.test")
    logger.logLevel = .critical
    return logger
}()
