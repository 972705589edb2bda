import Atomics
import Foundation
import GoIMClient
import GoIMProtocol
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What one client process opens: `count` connections spread round-robin over `hosts` × `ports`
/// (several 127.0.0.x addresses give each its own ephemeral-port range), authenticated into `room`.
struct FleetSpec: Codable, Sendable {
    var hosts: [String] = ["127.0.0.1"]
    var tcpPorts: [Int] = [3101]
    var wsPorts: [Int] = []
    /// `tcp`, `ws` or `mix` (alternating).
    var transport: String = "tcp"
    var count: Int = 1000
    /// Connections per second; 0 = as fast as `concurrency` allows.
    var rate: Double = 0
    var concurrency: Int = 256
    var room: String = "test://1"
    var firstMid: Int64 = 1
    var accepts: [Int32] = [1000, 1001, 1002]
    /// Heartbeat period in seconds (goim's JS client: 30); 0 = none.
    var heartbeat: Double = 30
    /// The pushed operation whose bodies carry a send time.
    var operation: Int32 = 1000
    var receiveBuffer: Int? = nil
    /// `nio`: full goim clients (heartbeats, counting pushes). `raw`: TCP only, blocking threads that connect and
    /// authenticate and then only hold the socket; a tenth of the CPU per connection, for connect storms.
    var engine: String = "nio"
}

/// Counters and the latency histogram of one process's clients. Updated on event loops.
final class FleetStats: Sendable {
    let connected = ManagedAtomic<Int>(0)
    let authed = ManagedAtomic<Int>(0)
    let failed = ManagedAtomic<Int>(0)
    let disconnects = ManagedAtomic<Int>(0)
    let received = ManagedAtomic<Int>(0)
    /// Wall-clock ns of the first connection attempt and of the latest authentication (0 = none yet).
    let started = ManagedAtomic<UInt64>(0)
    let finished = ManagedAtomic<UInt64>(0)
    let latency = NIOLockedValueBox(Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three))

    func record(_ received: ReceivedPacket, operation: Int32) {
        guard received.packet.operation.rawValue == operation else { return }
        self.received.wrappingIncrement(ordering: .relaxed)
        if let micros = Stamp.latencyMicros(received.packet.body) {
            latency.withLockedValue { _ = $0.record(micros) }
        }
    }

    func markStarted() {
        _ = started.compareExchange(expected: 0, desired: wallNanoseconds(), ordering: .relaxed)
    }

    func markAuthed() {
        authed.wrappingIncrement(ordering: .relaxed)
        let now = wallNanoseconds()
        var current = finished.load(ordering: .relaxed)
        while now > current {
            let (exchanged, original) = finished.compareExchange(expected: current, desired: now, ordering: .relaxed)
            if exchanged { break }
            current = original
        }
    }

    func snapshot() -> FleetSnapshot {
        FleetSnapshot(
            connected: connected.load(ordering: .relaxed), authed: authed.load(ordering: .relaxed),
            failed: failed.load(ordering: .relaxed), disconnects: disconnects.load(ordering: .relaxed),
            received: received.load(ordering: .relaxed), started: started.load(ordering: .relaxed),
            finished: finished.load(ordering: .relaxed), latency: latency.withLockedValue { $0 })
    }
}

struct FleetSnapshot: Codable, Sendable {
    var connected = 0
    var authed = 0
    var failed = 0
    var disconnects = 0
    var received = 0
    /// Wall-clock ns: the earliest first attempt and the latest authentication over the processes.
    var started: UInt64 = 0
    var finished: UInt64 = 0
    var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)

    /// Seconds from the first connection attempt to the last authentication.
    var connectSeconds: Double {
        finished > started && started > 0 ? Double(finished - started) / 1e9 : 0
    }

    mutating func add(_ other: FleetSnapshot) {
        if other.started > 0 { started = started == 0 ? other.started : min(started, other.started) }
        finished = max(finished, other.finished)
        connected += other.connected
        authed += other.authed
        failed += other.failed
        disconnects += other.disconnects
        received += other.received
        latency.add(other.latency)
    }
}

/// The connections of one process.
final class Fleet: Sendable {
    let spec: FleetSpec
    let stats = FleetStats()
    let group: MultiThreadedEventLoopGroup
    private let clients = NIOLockedValueBox<[GoIMClient]>([])

    init(spec: FleetSpec, threads: Int = System.coreCount) {
        self.spec = spec
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    /// Opens every connection (paced by `rate`, at most `concurrency` at once); returns when all tried.
    func open() async {
        let spec = self.spec
        let interval = spec.rate > 0 ? 1.0 / spec.rate : 0
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { tasks in
            var running = 0
            for i in 0..<spec.count {
                if running >= spec.concurrency {
                    await tasks.next()
                    running -= 1
                }
                if interval > 0 {
                    let due = start + .seconds(interval * Double(i))
                    if due > .now { try? await Task.sleep(until: due) }
                }
                running += 1
                tasks.addTask { await self.openOne(index: i) }
            }
        }
    }

    private func openOne(index: Int) async {
        let host = spec.hosts[index % spec.hosts.count]
        let useWS = spec.transport == "ws" || (spec.transport == "mix" && index % 2 == 1)
        let ports = useWS ? spec.wsPorts : spec.tcpPorts
        guard !ports.isEmpty else {
            stats.failed.wrappingIncrement(ordering: .relaxed)
            return
        }
        let port = ports[(index / max(1, spec.hosts.count)) % ports.count]
        let stats = self.stats
        let operation = spec.operation
        stats.markStarted()
        do {
            let client = try await GoIMClient.connect(
                host: host, port: port, transport: useWS ? .webSocket() : .tcp,
                delivery: .handler { stats.record($0, operation: operation) },
                eventLoopGroup: group, receiveBufferSize: spec.receiveBuffer)
            stats.connected.wrappingIncrement(ordering: .relaxed)
            let body = AuthBody(mid: spec.firstMid + Int64(index), key: "", roomID: spec.room, platform: "bench", accepts: spec.accepts)
            if !useWS {
                // Once authenticated only pushes matter: count them in place, ahead of the client's full decoder.
                let counter = FastPacketCounter(stats: stats, operation: operation)
                try await client.channel.eventLoop.submit {
                    try client.channel.pipeline.syncOperations.addHandler(counter, position: .first)
                }.get()
            }
            _ = try await client.auth(body, timeout: .seconds(30))
            stats.markAuthed()
            client.channel.closeFuture.whenComplete { _ in stats.disconnects.wrappingIncrement(ordering: .relaxed) }
            clients.withLockedValue { $0.append(client) }
        } catch {
            stats.failed.wrappingIncrement(ordering: .relaxed)
        }
    }

    /// Sends op 2 from every connection once per `spec.heartbeat`, spread evenly over the period.
    func heartbeatLoop() async {
        guard spec.heartbeat > 0 else { return }
        while !Task.isCancelled {
            let snapshot = clients.withLockedValue { $0 }
            let step = spec.heartbeat / Double(max(1, snapshot.count))
            var next = ContinuousClock.now
            for client in snapshot where client.isActive {
                next = next.advanced(by: .seconds(step))
                try? await client.send(Packet(operation: .heartbeat))
                if next > .now { try? await Task.sleep(until: next) }
                if Task.isCancelled { return }
            }
            if snapshot.isEmpty { try? await Task.sleep(for: .seconds(spec.heartbeat)) }
        }
    }

    func closeAll() async {
        let all = clients.withLockedValue { list in
            defer { list.removeAll() }
            return list
        }
        for client in all { await client.close() }
        try? await group.shutdownGracefully()
    }
}

/// Counts pushed packets straight from a TCP client's byte stream, in front of the client's decoder.
///
/// At hundreds of thousands of messages a second the bench clients share two cores with the comet under test; a
/// full decode into `Packet` values per message would make the clients, not the comet, the bottleneck. This reads
/// each goim header in place (packet length at 0, operation at 8), counts `operation` and records the send stamp of
/// its body, with one atomic add and one histogram lock per read instead of per message. Until the auth reply
/// (op 8) has passed it forwards whole packets to the decoder; after it, everything but the counted operation
/// (heartbeat replies) is dropped: nothing waits for it once the fleet is connected.
final class FastPacketCounter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let stats: FleetStats
    private let operation: Int32
    private var pending: ByteBuffer?
    private var stamps: [UInt64] = []
    private var authenticated = false

    init(stats: FleetStats, operation: Int32) {
        self.stats = stats
        self.operation = operation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if var pending {
            self.pending = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        var count = 0
        let now = wallNanoseconds()
        while buffer.readableBytes >= PacketHeader.length {
            let start = buffer.readerIndex
            let length = Int(buffer.getInteger(at: start, as: UInt32.self)!)
            guard length >= PacketHeader.length, length <= 1 << 20 else {
                context.close(promise: nil)
                return
            }
            guard buffer.readableBytes >= length else { break }
            let op = buffer.getInteger(at: start + 8, as: Int32.self)!
            if !authenticated {
                context.fireChannelRead(NIOAny(buffer.readSlice(length: length)!))
                authenticated = op == Operation.authReply.rawValue
                continue
            }
            if op == operation {
                count += 1
                if length >= PacketHeader.length + 8, let sent = buffer.getInteger(at: start + PacketHeader.length, as: UInt64.self),
                    sent > 1_500_000_000_000_000_000, sent <= now + 1_000_000_000
                {
                    stamps.append(now > sent ? (now - sent) / 1000 : 0)
                }
            }
            buffer.moveReaderIndex(forwardBy: length)
        }
        if buffer.readableBytes > 0 {
            // A packet split across reads: keep its start (copied, so the read buffer can be reused).
            var rest = context.channel.allocator.buffer(capacity: max(buffer.readableBytes, 64))
            rest.writeBuffer(&buffer)
            pending = rest
        }
        guard count > 0 else { return }
        stats.received.wrappingIncrement(by: count, ordering: .relaxed)
        if !stamps.isEmpty {
            stats.latency.withLockedValue { histogram in
                for micros in stamps { _ = histogram.record(micros) }
            }
            stamps.removeAll(keepingCapacity: true)
        }
    }
}
