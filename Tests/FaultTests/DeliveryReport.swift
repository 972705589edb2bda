import Foundation
import Synchronization

/// What a scenario delivered, from the pusher's acknowledged pushes and the clients' receipts.
///
/// - expected: (acknowledged push, addressed client) pairs where the client stayed connected the whole run;
/// - delivered / lost: of those, received at least once / never;
/// - duplicates: receipts beyond the first, on clients that stayed connected;
/// - reconnected clients (their comet died) are counted apart: what they missed is not a loss of an acknowledged
///   push to a connected client; with room history a recovering client gets its room's pushes back (counted
///   separately), mids pushes and broadcasts sent while it was away are in no history; clients a scenario puts
///   apart (those of a stuck comet) count here too;
/// - excluded: pushes the scenario says may miss (e.g. mids pushes while Redis lost the sessions), counted apart;
/// - recovery: the longest an acknowledged push sent after the fault waited for its last delivery.
struct DeliveryReport: Sendable, CustomStringConvertible {
    var scenario: String
    var pushesSent = 0
    var acknowledged = 0
    var notAcknowledged = 0
    var retried = 0
    var expected = 0
    var delivered = 0
    var lost = 0
    var duplicates = 0
    var reconnectedClients = 0
    var reconnectedExpected = 0
    var reconnectedDelivered = 0
    /// Of those, the room pushes (what room history lets a reconnecting client recover) and their extra receipts.
    var reconnectedRoomExpected = 0
    var reconnectedRoomDelivered = 0
    var reconnectedRoomDuplicates = 0
    var reconnectedRoomMissing: [String] = []
    var excludedExpected = 0
    var excludedDelivered = 0
    var recovery: Duration = .zero
    /// Pushes that had at least one failed attempt (refused, failed or timed out), and the error window: from the
    /// start of the first failed attempt to the end of the last one, whatever push they belonged to.
    var refused = 0
    var errorWindow: Duration = .zero
    var lastErrors: [String] = []
    var lostExamples: [String] = []
    /// Push ids received more than once by some client that stayed connected.
    var duplicated: Set<Int> = []
    var notes: [String] = []

    init(
        scenario: String, records: [Pusher.Record], fleet: CheckedFleet, faultAt: ContinuousClock.Instant,
        apart: Set<Int> = [], excluded: (Pusher.Record) -> Bool = { _ in false }
    ) {
        self.scenario = scenario
        pushesSent = records.count
        let receipts = fleet.clients.map { $0.receipts.withLock { $0 } }
        let reconnected = fleet.clients.map { $0.reconnected.load(ordering: .relaxed) || apart.contains($0.index) }
        reconnectedClients = reconnected.filter { $0 }.count
        let failed = records.filter { $0.failedSince != nil }
        refused = failed.count
        if let since = failed.compactMap(\.failedSince).min(), let until = failed.compactMap(\.failedUntil).max() {
            errorWindow = until - since
        }
        lastErrors = Array(Set(failed.map { String($0.lastError.prefix(100)) })).sorted().prefix(3).map { $0 }
        for record in records {
            if record.attempts > 1 { retried += 1 }
            guard let ackedAt = record.ackedAt else {
                notAcknowledged += 1
                continue
            }
            _ = ackedAt
            acknowledged += 1
            let isExcluded = excluded(record)
            var last: ContinuousClock.Instant?
            var complete = true
            for client in record.recipients {
                let receipt = receipts[client][record.id]
                if reconnected[client] {
                    reconnectedExpected += 1
                    if receipt != nil { reconnectedDelivered += 1 }
                    if case .room = record.target {
                        reconnectedRoomExpected += 1
                        if let receipt {
                            reconnectedRoomDelivered += 1
                            reconnectedRoomDuplicates += receipt.count - 1
                        } else if reconnectedRoomMissing.count < 10 {
                            let sentAfterFault = record.sentAt >= faultAt ? "after" : "before"
                            reconnectedRoomMissing.append(
                                "f\(record.id) (\(record.target), sent \(sentAfterFault) the fault) to client \(client) "
                                    + "\(fleet.clients[client].standings.withLock { $0 })")
                        }
                    }
                    continue
                }
                if let receipt, receipt.count > 1 {
                    duplicates += receipt.count - 1
                    duplicated.insert(record.id)
                }
                if isExcluded {
                    excludedExpected += 1
                    if receipt != nil { excludedDelivered += 1 }
                    continue
                }
                expected += 1
                if let receipt {
                    delivered += 1
                    last = max(last ?? receipt.first, receipt.first)
                } else {
                    lost += 1
                    complete = false
                    if lostExamples.count < 10 { lostExamples.append("f\(record.id) (\(record.target)) to client \(client)") }
                }
            }
            if complete, let last, record.sentAt >= faultAt {
                recovery = max(recovery, last - record.sentAt)
            }
        }
    }

    var description: String {
        var text = """
            [\(scenario)] pushes \(pushesSent): acknowledged \(acknowledged), not acknowledged \(notAcknowledged), retried \(retried); \
            deliveries to clients that stayed connected: expected \(expected), delivered \(delivered), lost \(lost), \
            duplicates \(duplicates); reconnected clients \(reconnectedClients) (got \(reconnectedDelivered) of \(reconnectedExpected); \
            room pushes \(reconnectedRoomDelivered) of \(reconnectedRoomExpected), \(reconnectedRoomDuplicates) twice); \
            time to recover \(Self.format(recovery))
            """
        if refused > 0 {
            text += "; \(refused) pushes refused or failed at least once, error window \(Self.format(errorWindow)) (e.g. \(lastErrors.joined(separator: " | ")))"
        }
        if excludedExpected > 0 { text += "; excluded window: \(excludedDelivered) of \(excludedExpected) delivered" }
        if !notes.isEmpty { text += "; " + notes.joined(separator: "; ") }
        if !lostExamples.isEmpty { text += "\n  lost, e.g.: " + lostExamples.joined(separator: ", ") }
        if !reconnectedRoomMissing.isEmpty {
            text += "\n  room pushes a reconnected client missed, e.g.: " + reconnectedRoomMissing.joined(separator: "; ")
        }
        if !duplicated.isEmpty { text += "\n  duplicated pushes: " + duplicated.sorted().prefix(20).map { "f\($0)" }.joined(separator: ", ") }
        return text
    }

    /// One row of docs/reliability.md's table.
    var markdownRow: String {
        let excluded = excludedExpected > 0 ? "\(excludedDelivered) / \(excludedExpected)" : "–"
        let reconnected =
            reconnectedClients > 0
            ? "\(reconnectedClients) clients, \(reconnectedDelivered) / \(reconnectedExpected) (room: \(reconnectedRoomDelivered) / \(reconnectedRoomExpected))"
            : "–"
        let window = refused > 0 ? ["\(refused) pushes refused at first, error window \(Self.format(errorWindow))"] : []
        return "| \(scenario) | \(acknowledged) | \(notAcknowledged) | \(expected) | \(delivered) | \(lost) | \(duplicates) | \(reconnected) | \(excluded) | \(Self.format(recovery)) | \((window + notes).joined(separator: "; ")) |"
    }

    static func format(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return milliseconds >= 1000 ? String(format: "%.1f s", Double(milliseconds) / 1000) : "\(milliseconds) ms"
    }

    /// Prints the report and, when `GOIM_FAULT_REPORT` names a file, appends its table row there.
    func publish() {
        print(description)
        guard let path = ProcessInfo.processInfo.environment["GOIM_FAULT_REPORT"], !path.isEmpty else { return }
        let line = markdownRow + "\n"
        if let handle = FileHandle(forWritingAtPath: path) {
            handle.seekToEndOfFile()
            handle.write(Data(line.utf8))
            try? handle.close()
        } else {
            FileManager.default.createFile(atPath: path, contents: Data(line.utf8))
        }
    }
}
