import Foundation
import GoIMClient
import GoIMProtocol
import NIOCore
import StackHarness
import Synchronization

/// The clients of a fault scenario: each one a goim client (TCP or WebSocket) in one of a few rooms, recording when
/// each push id first arrived and how many times. Pushes carry the body `f<id>`.
final class CheckedFleet: Sendable {
    static let operation: Int32 = 1000

    final class Client: Sendable {
        let index: Int
        let mid: Int64
        let room: String
        let webSocket: Bool
        /// The comet it is connected to now.
        let comet = Mutex<String>("")
        let connection = Mutex<GoIMClient?>(nil)
        /// Push id → (first arrival, times received).
        let receipts = Mutex<[Int: (first: ContinuousClock.Instant, count: Int)]>([:])
        /// Lost its connection during the run (its comet died) and connected again elsewhere.
        let reconnected = Atomic<Bool>(false)
        /// A recovery-aware client: its room's history epoch (from op 8) and the last offset it received.
        let epoch = Mutex<String>("")
        let lastOffset = Atomic<Int32>(0)
        /// The op 8 bodies it got, in order (what a failed check prints).
        let standings = Mutex<[String]>([])

        init(index: Int, mid: Int64, room: String, webSocket: Bool) {
            self.index = index
            self.mid = mid
            self.room = room
            self.webSocket = webSocket
        }

        func record(_ packet: ReceivedPacket) {
            guard packet.packet.operation.rawValue == CheckedFleet.operation else { return }
            let body = String(buffer: packet.packet.body)
            guard body.hasPrefix("f"), let id = Int(body.dropFirst()) else { return }
            if packet.packet.sequence > 0 {
                // Room messages come in offset order: the last one is the highest.
                lastOffset.store(packet.packet.sequence, ordering: .relaxed)
            }
            let now = ContinuousClock.now
            receipts.withLock { receipts in
                if let known = receipts[id] {
                    receipts[id] = (known.first, known.count + 1)
                } else {
                    receipts[id] = (now, 1)
                }
            }
        }

        var isConnected: Bool { connection.withLock { $0?.isActive ?? false } }
    }

    let clients: [Client]
    let rooms: [String]
    /// Clients send `recover` with their epoch and last offset (docs/history.md), and so reconnect without a gap.
    let recovering: Bool

    /// `count` clients over `rooms` rooms, every fourth one on WebSocket, mids `firstMid...`.
    init(count: Int, rooms: Int, firstMid: Int64 = 50_000, recovering: Bool = false) {
        self.recovering = recovering
        self.rooms = (0..<rooms).map { "live://fault-\($0)" }
        clients = (0..<count).map { index in
            Client(index: index, mid: firstMid + Int64(index), room: "live://fault-\(index % rooms)", webSocket: index % 4 == 3)
        }
    }

    /// Connects every client, spread round-robin over `comets`.
    func connect(to comets: [Stack.Comet]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients {
                let comet = comets[client.index % comets.count]
                group.addTask { try await self.connect(client, to: comet) }
            }
            try await group.waitForAll()
        }
    }

    private func connect(_ client: Client, to comet: Stack.Comet) async throws {
        let connection = try await GoIMClient.connect(
            host: comet.host, port: client.webSocket ? comet.webSocketPort : comet.tcpPort, transport: client.webSocket ? .webSocket() : .tcp,
            delivery: .handler { packet in client.record(packet) })
        do {
            // The server picks the key (as goim's own clients let it).
            let reply: Packet
            if recovering {
                let recover: [String: Any] = [
                    "epoch": client.epoch.withLock { $0 }, "offset": Int(client.lastOffset.load(ordering: .relaxed)),
                ]
                let body: [String: Any] = [
                    "mid": client.mid, "key": "", "room_id": client.room, "platform": "fault", "accepts": [Self.operation],
                    "recover": recover,
                ]
                reply = try await connection.auth(token: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
                client.standings.withLock { $0.append("sent \(recover["offset"]!) → " + String(buffer: reply.body)) }
                let standing = try JSONSerialization.jsonObject(with: Data(reply.body.readableBytesView)) as? [String: Any]
                client.epoch.withLock { $0 = standing?["epoch"] as? String ?? "" }
            } else {
                reply = try await connection.auth(
                    AuthBody(mid: client.mid, key: "", roomID: client.room, platform: "fault", accepts: [Self.operation]))
            }
            guard reply.operation == .authReply else { throw StackTestError("client \(client.index): no op 8") }
        } catch {
            await connection.close()
            throw error
        }
        client.comet.withLock { $0 = comet.name }
        client.connection.withLock { $0 = connection }
    }

    /// Reconnects every client that lost its connection, to the comets still alive (as a goim client does after
    /// asking `/goim/nodes`); marks them `reconnected`. Returns how many it reconnected.
    @discardableResult
    func reconnectLost(to comets: [Stack.Comet]) async throws -> Int {
        let lost = clients.filter { !$0.isConnected }
        for client in lost {
            client.reconnected.store(true, ordering: .relaxed)
            try await connect(client, to: comets[client.index % comets.count])
        }
        return lost.count
    }

    /// Sends op 2 on every connection every `interval` until cancelled: comets refresh sessions on heartbeats.
    func heartbeats(every interval: Duration) async {
        while !Task.isCancelled {
            for client in clients {
                client.connection.withLock { $0 }?.sendAndForget(Packet(operation: .heartbeat, sequence: 1))
            }
            try? await Task.sleep(for: interval)
        }
    }

    func closeAll() async {
        for client in clients { await client.connection.withLock { $0 }?.close() }
    }

    /// The clients a push addresses, by index.
    func recipients(of target: PushTarget) -> [Int] {
        switch target {
        case .room(let room): clients.filter { $0.room == room }.map(\.index)
        case .mids(let mids): clients.filter { mids.contains($0.mid) }.map(\.index)
        case .all: clients.map(\.index)
        }
    }
}

/// What one push addresses.
enum PushTarget: Sendable, CustomStringConvertible {
    case room(String)
    case mids([Int64])
    case all

    var kind: String {
        switch self {
        case .room: "room"
        case .mids: "mids"
        case .all: "all"
        }
    }

    var description: String {
        switch self {
        case .room(let room): "room \(room)"
        case .mids(let mids): "mids \(mids)"
        case .all: "broadcast"
        }
    }

    /// logic's HTTP route for it (operation 1000).
    var uri: String {
        switch self {
        case .room(let room):
            "/goim/push/room?operation=\(CheckedFleet.operation)&type=live&room=\(room.dropFirst("live://".count))"
        case .mids(let mids): "/goim/push/mids?operation=\(CheckedFleet.operation)&" + mids.map { "mids=\($0)" }.joined(separator: "&")
        case .all: "/goim/push/all?operation=\(CheckedFleet.operation)"
        }
    }
}
