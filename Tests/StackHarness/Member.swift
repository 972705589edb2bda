import Foundation
import GoIMClient
import GoIMProtocol
import NIOCore
import Synchronization
import Testing

/// One goim client connected to a comet process, recording every packet pushed to it.
public final class Member: Sendable {
    public struct Push: Sendable, Hashable {
        public var operation: Int32
        public var body: String
        /// Came in a WebSocket op 9 envelope (TCP clients get the inner packets directly).
        public var inEnvelope: Bool
        /// The packet's `seq`: a room message's offset for a recovery-aware client, else 0.
        public var sequence: Int32 = 0

        public init(operation: Int32, body: String, inEnvelope: Bool, sequence: Int32 = 0) {
            self.operation = operation
            self.body = body
            self.inEnvelope = inEnvelope
            self.sequence = sequence
        }
    }

    public let name: String
    public let client: GoIMClient
    public let key: String
    public let mid: Int64
    /// The op 8 body (empty for goim's clients).
    public let authReply: String
    private let received: Received

    private final class Received: Sendable {
        let pushes = Mutex<[Push]>([])
    }

    private init(name: String, client: GoIMClient, key: String, mid: Int64, authReply: String, received: Received) {
        self.authReply = authReply
        self.name = name
        self.client = client
        self.key = key
        self.mid = mid
        self.received = received
    }

    /// Connects over TCP or WebSocket and authenticates (op 7 → op 8) with goim's JSON auth body.
    /// With `recover`, the body also carries `"recover": {"epoch": …, "offset": …}` (a recovery-aware client); with
    /// `recoverUser`, `"recover": {…, "mid": {"epoch": …, "offset": …}}` (its user's stream too).
    public static func connect(
        _ name: String, to comet: Stack.Comet, webSocket: Bool, mid: Int64, room: String, accepts: [Int32] = [1000, 1001, 1002],
        recover: (epoch: String, offset: UInt64)? = nil, recoverUser: (epoch: String, offset: UInt64)? = nil,
        key chosenKey: String? = nil
    ) async throws -> Member {
        let received = Received()
        let client = try await GoIMClient.connect(
            host: comet.host, port: webSocket ? comet.webSocketPort : comet.tcpPort, transport: webSocket ? .webSocket() : .tcp,
            delivery: .handler { packet in
                let push = Push(
                    operation: packet.packet.operation.rawValue, body: String(buffer: packet.packet.body),
                    inEnvelope: packet.inEnvelope, sequence: packet.packet.sequence)
                received.pushes.withLock { $0.append(push) }
            })
        let key = chosenKey ?? "\(name)-\(mid)-\(UInt32.random(in: 0...UInt32.max))"
        let reply: Packet
        do {
            if recover != nil || recoverUser != nil {
                var position: [String: Any] = ["epoch": recover?.epoch ?? "", "offset": recover?.offset ?? 0]
                if let recoverUser { position["mid"] = ["epoch": recoverUser.epoch, "offset": recoverUser.offset] }
                let body: [String: Any] = [
                    "mid": mid, "key": key, "room_id": room, "platform": "test", "accepts": accepts, "recover": position,
                ]
                let json = try JSONSerialization.data(withJSONObject: body)
                reply = try await client.auth(token: ByteBuffer(bytes: json))
            } else {
                reply = try await client.auth(AuthBody(mid: mid, key: key, roomID: room, platform: "test", accepts: accepts))
            }
            #expect(reply.operation == .authReply)
        } catch {
            await client.close()
            throw error
        }
        return Member(name: name, client: client, key: key, mid: mid, authReply: String(buffer: reply.body), received: received)
    }

    public var pushes: [Push] { received.pushes.withLock { $0 } }

    public var bodies: [String] { pushes.map(\.body) }

    public func count(of body: String) -> Int { pushes.filter { $0.body == body }.count }

    /// Waits until a push with `body` arrived and returns it.
    @discardableResult
    public func receive(_ body: String, timeout: Duration = .seconds(20)) async throws -> Push {
        try await eventually("\(name) receives \"\(body)\"", timeout: timeout) { self.count(of: body) > 0 }
        return pushes.first { $0.body == body }!
    }

    /// Waits until every body in `bodies` arrived.
    public func receiveAll(_ bodies: some Collection<String>, timeout: Duration = .seconds(30)) async throws {
        let wanted = Set(bodies)
        do {
            try await eventually("\(name) receives \(wanted.count) pushes", timeout: timeout) {
                wanted.isSubset(of: Set(self.bodies))
            }
        } catch {
            let missing = wanted.subtracting(self.bodies)
            throw StackTestError("\(name) is missing \(missing.count) of \(wanted.count) pushes, e.g. \(missing.sorted().prefix(10))")
        }
    }

    public func close() async { await client.close() }
}
