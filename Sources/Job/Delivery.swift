import Foundation
import GoIMProtocol
import GoIMRPC
import History
import Logging
import Telemetry
import NIOCore
import SwiftProtobuf

/// How one queue message ended.
public enum DeliveryOutcome: Sendable, Equatable {
    /// Every target comet accepted it.
    case delivered
    /// Some comets accepted it; the others left the registry, were unreachable past the deadline, or refused it.
    case partiallyDelivered(String)
    /// No comet could take it: the comet it names, or every comet, is not in the registry.
    case undeliverable(String)
    /// The comet answered with an error (invalid request); retrying would not help.
    case rejected(String)
    /// Not a valid `PushMsg`.
    case malformed(String)
    /// Shutdown ended its delivery: it goes back to the queue.
    case abandoned
    /// A message this job delivered and acknowledged before, back because the ack was lost: acknowledged again, not
    /// sent again.
    case alreadyDelivered
}

/// The result of calls to one comet.
enum CallOutcome: Sendable, Equatable {
    case delivered
    /// The comet left the registry before it accepted the call.
    case gone
    /// The comet is stuck (`CometHealth`) or did not accept the call within `comet.deliveryDeadline`.
    case unreachable
    /// The comet fell so far behind the others on a room that the room's queue stayed full for `comet.skipAfter`:
    /// given up for that comet so that the others go on (`RoomAggregator.skipLanes`).
    case behind
    case rejected(String)
    case abandoned
}

/// Sums up the calls one message needed (one per target comet).
struct OutcomeTally: Sendable {
    var delivered = 0
    var gone: [String] = []
    var unreachable: [String] = []
    var behind: [String] = []
    var rejected: [String] = []
    var abandoned = false

    /// Comets done with the message so far (any outcome).
    var count: Int { delivered + gone.count + unreachable.count + behind.count + rejected.count }

    mutating func add(_ outcome: CallOutcome, comet: String) {
        switch outcome {
        case .delivered: delivered += 1
        case .gone: gone.append(comet)
        case .unreachable: unreachable.append(comet)
        case .behind: behind.append(comet)
        case .rejected(let reason): rejected.append("\(comet): \(reason)")
        case .abandoned: abandoned = true
        }
    }

    var outcome: DeliveryOutcome {
        if abandoned { return .abandoned }
        if gone.isEmpty && unreachable.isEmpty && behind.isEmpty && rejected.isEmpty { return .delivered }
        let detail = (gone.isEmpty ? [] : ["comets left the registry: \(gone.joined(separator: ", "))"])
            + (unreachable.isEmpty ? [] : ["comets unreachable: \(unreachable.joined(separator: ", "))"])
            + (behind.isEmpty ? [] : ["comets too far behind on the room: \(behind.joined(separator: ", "))"])
            + (rejected.isEmpty ? [] : ["refused by \(rejected.joined(separator: "; "))"])
        let text = detail.joined(separator: "; ")
        if delivered > 0 { return .partiallyDelivered(text) }
        return rejected.isEmpty ? .undeliverable(text) : .rejected(text)
    }
}

/// Comet calls with retries: a call that fails for a transient reason (comet unreachable, deadline,
/// overload) is repeated with exponential backoff while the comet is in the registry, for at most
/// `deliveryDeadline`, and not at all while the comet is stuck (`CometHealth`) unless it is the probe.
struct Delivery: Sendable {
    let pool: CometPool
    let statistics: JobStatistics
    let backoff: Duration
    let maxBackoff: Duration
    let health: CometHealth
    let deliveryDeadline: Duration
    let logger: Logger

    /// Calls `body` on comet `hostname` until it succeeds, the comet answers with a permanent error, the comet
    /// leaves the registry, the comet is stuck (and another call is probing it), `deliveryDeadline` has passed,
    /// or the task is cancelled.
    func call(
        _ hostname: String, rpc: String = "BroadcastRoom", _ body: @Sendable (any CometRPC) async throws -> Void
    ) async -> CallOutcome {
        var delay = backoff
        var attempt = 0
        let giveUp = ContinuousClock.now + deliveryDeadline
        while true {
            if Task.isCancelled { return .abandoned }
            guard let comet = pool.comet(hostname) else {
                health.forget(hostname)
                return .gone
            }
            let admission = health.admit(hostname)
            guard admission != .skip else {
                health.recordSkipped()
                return .unreachable
            }
            let start = ContinuousClock.now
            do {
                try await comet.call(body)
                statistics.recordCometCall(hostname, rpc: rpc, start.elapsed, success: true)
                health.finished(hostname, success: true, admission: admission)
                statistics.cometCalls.increment()
                if attempt > 0 {
                    logger.info("comet accepted a call after retries", metadata: [
                        "goim.server": "\(hostname)", "goim.attempts": "\(attempt + 1)",
                    ])
                }
                return .delivered
            } catch {
                statistics.recordCometCall(hostname, rpc: rpc, start.elapsed, success: false)
                health.finished(hostname, success: false, admission: admission)
                if Task.isCancelled { return .abandoned }
                attempt += 1
                switch CallFailure(error) {
                case .permanent:
                    logger.error("comet refused a call", metadata: ["goim.server": "\(hostname)", "error": "\(error)"])
                    return .rejected("\(error)")
                case .transient:
                    guard ContinuousClock.now < giveUp else {
                        logger.warning("comet did not accept a call within comet.deliveryDeadline; giving up", metadata: [
                            "goim.server": "\(hostname)", "goim.attempts": "\(attempt)", "error": "\(error)",
                        ])
                        return .unreachable
                    }
                    statistics.retries.increment()
                    if attempt == 1 || attempt.isMultiple(of: 20) {
                        logger.warning("comet call failed; retrying with backoff", metadata: [
                            "goim.server": "\(hostname)", "goim.attempt": "\(attempt)", "error": "\(error)",
                        ])
                    }
                    do {
                        try await Task.sleep(for: delay * Double.random(in: 0.8...1.2))
                    } catch {
                        return .abandoned
                    }
                    delay = min(delay * 2, maxBackoff)
                }
            }
        }
    }

    /// A PUSH (key or mid push): `PushMsg` to the comet the message names.
    func push(_ message: Goim_Logic_PushMsg) async -> DeliveryOutcome {
        guard await pool.resolve(message.server) != nil else {
            return .undeliverable("comet \"\(message.server)\" is not in the registry")
        }
        let request = Goim_Comet_PushMsgReq.with {
            $0.keys = message.keys
            $0.protoOp = message.operation
            $0.proto = PushEncoding.envelope(operation: message.operation, body: message.msg)
        }
        var tally = OutcomeTally()
        tally.add(await call(message.server, rpc: "PushMsg") { try await $0.pushMsg(request) }, comet: message.server)
        return tally.outcome
    }

    /// A BROADCAST: `Broadcast` to every comet, with the speed shared among them (goim).
    func broadcast(_ message: Goim_Logic_PushMsg) async -> DeliveryOutcome {
        let comets = await pool.resolveAll()
        guard !comets.isEmpty else { return .undeliverable("no comet is registered") }
        let request = Goim_Comet_BroadcastReq.with {
            $0.protoOp = message.operation
            $0.proto = PushEncoding.envelope(operation: message.operation, body: message.msg)
            $0.speed = PushEncoding.speed(message.speed, comets: comets.count)
        }
        return await toEvery(comets.map(\.hostname), rpc: "Broadcast") { try await $0.broadcast(request) }
    }

    /// A push to users with history (`PushMsg.mids`): `Users/Push` to every comet, each user with the offset its
    /// history gave the message (`stamps`, in the order of `message.mids`; nil: not written, sent without one). A
    /// comet holds any user's connections: the routing store is not consulted, so a user that connects while the
    /// message is on its way gets it either live or from history (docs/history.md).
    func pushUsers(_ message: Goim_Logic_PushMsg, stamps: [HistoryStamp?]) async -> DeliveryOutcome {
        let comets = await pool.resolveAll()
        guard !comets.isEmpty else { return .undeliverable("no comet is registered") }
        let request = Swiftgoim_Comet_UserPushReq.with { request in
            request.op = message.operation
            request.body = message.msg
            request.users = message.mids.enumerated().map { index, mid in
                .with {
                    $0.mid = mid
                    if index < stamps.count, let stamp = stamps[index] {
                        $0.offset = stamp.offset
                        $0.epoch = stamp.epoch
                    }
                }
            }
        }
        return await toEvery(comets.map(\.hostname), rpc: "Users.Push") { try await $0.pushUsers(request) }
    }

    /// One call to each comet at once; the outcome of them all.
    private func toEvery(
        _ hostnames: [String], rpc: String, _ body: @escaping @Sendable (any CometRPC) async throws -> Void
    ) async -> DeliveryOutcome {
        await withTaskGroup(of: (String, CallOutcome).self) { group in
            for hostname in hostnames {
                group.addTask { (hostname, await call(hostname, rpc: rpc, body)) }
            }
            var tally = OutcomeTally()
            for await (hostname, outcome) in group { tally.add(outcome, comet: hostname) }
            return tally.outcome
        }
    }
}

/// The bytes job sends, exactly as goim's Job builds them.
public enum PushEncoding {
    /// One inner packet: ver 1, op = operation, seq 0 (or the message's offset in its room's history), body = msg.
    public static func innerPacket(operation: Int32, body: Data, sequence: Int32 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        RawBatch.append(operation: Operation(operation), body: body, sequence: sequence, to: &buffer)
        return buffer
    }

    /// The op 9 envelope of a PUSH or BROADCAST: ver 1, op 9, seq 0, body = one inner packet.
    public static func envelope(operation: Int32, body: Data) -> Goim_Protocol_Proto {
        var buffer = ByteBuffer()
        RawBatch.append(operation: Operation(operation), body: body, to: &buffer)
        return envelope(body: Data(buffer.readableBytesView))
    }

    /// An op 9 envelope around already-encoded inner packets.
    public static func envelope(body: Data) -> Goim_Protocol_Proto {
        var proto = Goim_Protocol_Proto()
        proto.ver = 1
        proto.op = Operation.raw.rawValue
        proto.seq = 0
        proto.body = body
        return proto
    }

    /// goim divides a broadcast's speed by the number of comets (and crashed with none: bug 20).
    /// A positive speed stays at least 1 so that it never turns into "unlimited" (0).
    public static func speed(_ speed: Int32, comets: Int) -> Int32 {
        guard speed > 0, comets > 0 else { return max(0, speed) }
        return max(1, speed / Int32(clamping: comets))
    }
}
