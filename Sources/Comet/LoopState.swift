import NIOCore

/// One room's members on one event loop. Members are an array with O(1) swap-remove; each handler remembers its
/// index. `info` holds the comet-wide counts.
final class LoopRoom {
    let info: RoomInfo
    var members: ContiguousArray<ConnectionHandler> = []

    init(info: RoomInfo) {
        self.info = info
    }
}

/// Everything one event loop owns: its connections (for the timeout sweep and `Broadcast`), its share of every
/// room, and hot-path counters. Only ever touched on `eventLoop`, so nothing here takes a lock: a room broadcast
/// hops to each loop once and writes to that loop's members in a plain loop.
final class LoopState {
    let eventLoop: any EventLoop
    let counters: Counters
    /// Every connection of this loop, from accept to close, in no order.
    private(set) var connections: ContiguousArray<ConnectionHandler> = []
    private(set) var rooms: [String: LoopRoom] = [:]
    /// Each user's connections on this loop, by mid (decimal): where pushes to users with history go.
    private(set) var users: [String: LoopRoom] = [:]
    /// Pushes written (one per recipient).
    var delivered = 0
    /// Pushes skipped because the recipient was a slow consumer.
    var dropped = 0
    /// Of `delivered`, those written straight to the socket (`DirectWriter`), and the bytes of all of them. Plain
    /// integers of this loop: /metrics reads them at scrape time, the fan-out loop pays one add each.
    var directWrites = 0
    var bytesWritten = 0
    /// Open connections by transport (`TransportKind.rawValue`), of which authenticated, and connections closed.
    var open: [Int] = [0, 0]
    var authenticated: [Int] = [0, 0]
    var closed = 0

    /// This loop's bit in `RoomInfo.loops`. Loops past the 63rd (and loops outside the comet's group, in unit
    /// tests) share the top bit, which is never cleared: "ask every loop".
    let bit: UInt64

    init(eventLoop: any EventLoop, counters: Counters, index: Int = 63) {
        self.eventLoop = eventLoop
        self.counters = counters
        bit = Self.bit(forLoop: index)
    }

    static func bit(forLoop index: Int) -> UInt64 {
        (0..<63).contains(index) ? 1 << UInt64(index) : 1 << 63
    }

    // MARK: connections

    func add(_ connection: ConnectionHandler) {
        connection.sweepIndex = connections.count
        connections.append(connection)
        open[Int(connection.transport.rawValue)] += 1
    }

    func remove(_ connection: ConnectionHandler) {
        let index = connection.sweepIndex
        guard index >= 0, index < connections.count, connections[index] === connection else { return }
        open[Int(connection.transport.rawValue)] -= 1
        closed += 1
        let last = connections.removeLast()
        if index < connections.count {
            connections[index] = last
            last.sweepIndex = index
        }
        connection.sweepIndex = -1
    }

    /// Closes connections past their deadline (handshake, heartbeat or credential expiry). One pass per sweep interval over this
    /// loop's connections replaces goim's per-connection timers.
    func sweep(now: NIODeadline) {
        var expired: [ConnectionHandler] = []
        for connection in connections where connection.deadline < now {
            expired.append(connection)
        }
        // Closing mutates `connections`, so close after the pass.
        for connection in expired { connection.expire(now: now) }
    }

    // MARK: rooms

    /// Adds `connection` to room `id` on this loop, counting it in `directory`.
    func join(_ connection: ConnectionHandler, room id: String, directory: RoomDirectory) -> LoopRoom {
        Self.join(connection, id, directory, table: &rooms, index: \.roomIndex, bit: bit)
    }

    func leave(_ connection: ConnectionHandler, room: LoopRoom, directory: RoomDirectory) {
        Self.leave(connection, room, directory, table: &rooms, index: \.roomIndex, bit: bit)
    }

    /// Adds `connection` to its user's connections (`mid`) on this loop.
    func join(_ connection: ConnectionHandler, user mid: Int64, directory: RoomDirectory) -> LoopRoom {
        Self.join(connection, String(mid), directory, table: &users, index: \.userIndex, bit: bit)
    }

    func leave(_ connection: ConnectionHandler, user: LoopRoom, directory: RoomDirectory) {
        Self.leave(connection, user, directory, table: &users, index: \.userIndex, bit: bit)
    }

    private static func join(
        _ connection: ConnectionHandler, _ id: String, _ directory: RoomDirectory, table: inout [String: LoopRoom],
        index: ReferenceWritableKeyPath<ConnectionHandler, Int>, bit: UInt64
    ) -> LoopRoom {
        let info = directory.join(id)
        let room: LoopRoom
        if let existing = table[id] {
            room = existing
        } else {
            room = LoopRoom(info: info)
            table[id] = room
            info.loops.bitwiseOr(bit, ordering: .releasing)
        }
        connection[keyPath: index] = room.members.count
        room.members.append(connection)
        return room
    }

    private static func leave(
        _ connection: ConnectionHandler, _ room: LoopRoom, _ directory: RoomDirectory, table: inout [String: LoopRoom],
        index indexPath: ReferenceWritableKeyPath<ConnectionHandler, Int>, bit: UInt64
    ) {
        let index = connection[keyPath: indexPath]
        if index >= 0, index < room.members.count, room.members[index] === connection {
            let last = room.members.removeLast()
            if index < room.members.count {
                room.members[index] = last
                last[keyPath: indexPath] = index
            }
            if room.members.isEmpty, table[room.info.id] === room {
                table.removeValue(forKey: room.info.id)
                if bit != 1 << 63 { room.info.loops.bitwiseAnd(~bit, ordering: .releasing) }
            }
        }
        connection[keyPath: indexPath] = -1
        directory.leave(room.info)
    }

    // MARK: fan-out

    /// Writes `push` to every member of room `id` on this loop; room pushes ignore watch sets (goim).
    func broadcastRoom(_ id: String, push: Push) {
        guard let room = rooms[id] else { return }
        // Iterating a value copy: a member closing during the loop (write error) cannot disturb it.
        for member in room.members {
            member.deliver(push)
        }
    }

    /// Writes a run of a room with history to every member of room `id` on this loop, each in the form it asked for.
    func broadcastRoom(_ id: String, stream push: StreamPush) {
        guard let room = rooms[id] else { return }
        for member in room.members {
            member.deliver(push)
        }
    }

    /// Writes a push to user `id` (mid) without an offset to its connections on this loop that watch `operation`.
    func pushToUser(_ id: String, operation: Int32, push: Push) {
        guard let user = users[id] else { return }
        for member in user.members {
            member.pushIfWatching(operation, push)
        }
    }

    /// Writes one message of user `id`'s stream to its connections on this loop that watch its operation, each in
    /// the form it asked for.
    func pushToUser(_ id: String, stream push: StreamPush) {
        guard let user = users[id] else { return }
        for member in user.members {
            member.deliverToUser(push)
        }
    }

    /// Writes `push` to every connection of this loop that watches `operation`.
    func broadcast(operation: Int32, push: Push) {
        for connection in connections where connection.watches(operation) {
            connection.deliver(push)
        }
    }

    /// `Broadcast` with a speed: delivers to `recipients[start...]` in chunks of `chunk`, one chunk per `interval`.
    func pacedBroadcast(
        _ recipients: ContiguousArray<ConnectionHandler>, from start: Int, chunk: Int, interval: TimeAmount, operation: Int32,
        push: Push
    ) {
        let end = min(start + chunk, recipients.count)
        for index in start..<end where recipients[index].watches(operation) {
            recipients[index].deliver(push)
        }
        guard end < recipients.count else { return }
        eventLoop.assumeIsolated().scheduleTask(in: interval) {
            self.pacedBroadcast(recipients, from: end, chunk: chunk, interval: interval, operation: operation, push: push)
        }
    }

    /// Connections of this loop that watch `operation` now (the snapshot a paced broadcast walks).
    func watchers(of operation: Int32) -> ContiguousArray<ConnectionHandler> {
        ContiguousArray(connections.lazy.filter { $0.watches(operation) })
    }
}
