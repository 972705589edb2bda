import Foundation
import GoIMClient
import GoIMProtocol
import NIOCore
import Synchronization
import TestLogic
import Testing

@testable import Comet

extension CometSuite {
    @Suite("Watch set: bounded, and cheap to change")
    struct WatchLimitTests {
        @Test("a Sub taking the watch set over protocol.maxWatchOps closes that client only, and is counted")
        func subOverLimit() async throws {
            try await withComet(configure: { $0.proto.maxWatchOps = 8 }) { comet in
                let greedy = try await comet.client(auth: auth(mid: 1, key: "greedy", accepts: [1000, 1001]))
                let other = try await comet.client(auth: auth(mid: 2, key: "other"))
                // 2 + 6 = 8: at the limit, accepted; re-subscribing what is watched adds nothing.
                _ = try await greedy.request(
                    Packet(operation: .sub, body: WatchOps.body(Int32(1002)...1007)), replyOperation: .subReply)
                _ = try await greedy.request(
                    Packet(operation: .sub, body: WatchOps.body([1000, 1007])), replyOperation: .subReply)
                // Unsub makes room again.
                _ = try await greedy.request(Packet(operation: .unsub, body: WatchOps.body([1007])), replyOperation: .unsubReply)
                _ = try await greedy.request(Packet(operation: .sub, body: WatchOps.body([2000])), replyOperation: .subReply)
                #expect(try await comet.statistics().watchLimitCloses == 0)

                try await greedy.send(Packet(operation: .sub, body: WatchOps.body([2001])))
                try await greedy.waitUntilClosed()
                try await comet.waitForStatistics { $0.watchLimitCloses == 1 && $0.openConnections == 1 }
                #expect(try await other.heartbeat() == 0)
            }
        }

        @Test("auth accepting more than protocol.maxWatchOps operations is closed and its session removed")
        func acceptsOverLimit() async throws {
            try await withComet(configure: { $0.proto.maxWatchOps = 4 }) { comet in
                let client = try await GoIMClient.connect(port: comet.tcpPort, transport: .tcp)
                _ = try? await client.auth(auth(mid: 9, key: "many", accepts: [1, 2, 3, 4, 5]), timeout: .seconds(5))
                try await client.waitUntilClosed()
                try await comet.waitForStatistics { $0.watchLimitCloses == 1 && $0.openConnections == 0 }
                try await comet.logic.wait { $0.disconnects(of: "many") == 1 }
            }
        }

        @Test("thousands of 4 kB Sub packets from one client leave another client on the same event loop responsive")
        func subFlood() async throws {
            // Kernel-sized socket buffers: with goim's 4 kB SO_SNDBUF the 4 kB Sub echoes drain at a few per second and the
            // comet stops reading the flooder (its own backpressure) long before the event loop feels anything.
            try await withComet(configure: { $0.eventLoopThreads = 1; $0.tcp.sndbuf = 0; $0.tcp.rcvbuf = 0 }) { comet in
                let flooder = try await comet.client(auth: auth(mid: 1, key: "flooder"))
                let neighbour = try await comet.client(auth: auth(mid: 2, key: "neighbour", room: "live://watch"))
                // 4 kB of operations, 200 distinct ones (under the default limit of 256), repeated.
                var ops: [Int32] = []
                while WatchOps.body(ops).readableBytes < 4000 { ops.append(1000 + Int32(ops.count % 200)) }
                let body = WatchOps.body(ops)
                #expect(body.readableBytes >= 4000 && body.readableBytes <= 4096)

                // The neighbour's round trips before the flood: the machine's own noise, the yardstick below.
                var quiet = Duration.zero
                for _ in 0..<20 {
                    let started = ContinuousClock.now
                    _ = try await neighbour.heartbeat()
                    quiet = max(quiet, ContinuousClock.now - started)
                }

                let finished = Atomic<Bool>(false)
                let flood = Task {
                    defer { finished.store(true, ordering: .relaxed) }
                    for sequence in 1...2000 {
                        try await flooder.send(Packet(operation: .sub, sequence: Int32(sequence), body: body))
                    }
                    // Packets of one connection are handled in order: this reply comes after every Sub was.
                    _ = try await flooder.heartbeat(timeout: .seconds(60))
                }
                var slowest = Duration.zero
                var roundTrips = 0
                while !finished.load(ordering: .relaxed) || roundTrips < 5 {
                    let started = ContinuousClock.now
                    _ = try await neighbour.heartbeat()
                    slowest = max(slowest, ContinuousClock.now - started)
                    roundTrips += 1
                }
                try await flood.value
                try await comet.broadcastRoom("live://watch", body: "still here")
                let pushed = try await neighbour.receive(1)
                #expect(String(buffer: pushed[0].packet.body) == "still here")
                // A liveness bound, not a performance figure (docs/security.md): handling a 4 kB Sub costs microseconds,
                // so the neighbour is never stuck behind the flood, whatever else loads this machine.
                #expect(
                    slowest < max(.seconds(2), quiet * 10),
                    "slowest heartbeat round trip: \(slowest) during the flood, \(quiet) before it")
                #expect(try await comet.statistics().watchLimitCloses == 0)
                #expect(flooder.isActive)
            }
        }
    }
}
