import GoIMProtocol
import Synchronization

/// One room's counters, shared by every event loop. Counts change under the directory shard's lock; heartbeat
/// replies read them without a lock.
final class RoomInfo: Sendable {
    let id: String
    /// Members on this comet, over all event loops.
    let online = Atomic<Int32>(0)
    /// Cluster-wide count from the last `RenewOnline` reply (0 = unknown).
    let allOnline = Atomic<Int32>(0)
    /// The event loops with members, one bit per loop (`LoopState.bit`): a push to a user hops only to those.
    let loops = Atomic<UInt64>(0)

    /// Orders the room's messages with offsets (rooms with history only; made on the first one).
    private let sequencerBox = Mutex<RoomSequencer?>(nil)

    init(id: String) {
        self.id = id
    }

    func sequencer(maxHeld: Int, counters: Counters) -> RoomSequencer {
        sequencerBox.withLock { box in
            if let existing = box { return existing }
            let made = RoomSequencer(maxHeld: maxHeld, counters: counters)
            box = made
            return made
        }
    }

    /// What a heartbeat reply reports: the cluster count when known, else the local one (goim's rule).
    var reportedOnline: Int32 {
        let all = allOnline.load(ordering: .relaxed)
        return all > 0 ? all : online.load(ordering: .relaxed)
    }
}

/// Every room on this comet with its counts, sharded by room id. The member lists themselves live per event loop
/// (`LoopState`); this directory only answers "how many", for heartbeats, `Rooms` and `RenewOnline`.
///
/// Join and leave both run under the shard lock, so a room that empties is removed atomically and a later join
/// creates a fresh one: no "room dropped" failures (goim bugs 13 and 14).
final class RoomDirectory: Sendable {
    final class Shard: Sendable {
        let rooms = Mutex<[String: RoomInfo]>([:])
    }

    let shards: [Shard]

    init(shardCount: Int = 32) {
        shards = (0..<max(1, shardCount)).map { _ in Shard() }
    }

    private func shard(for id: String) -> Shard {
        shards[Int(id.cityHash32 % UInt32(shards.count))]
    }

    /// Counts one more member of `id` and returns the room's counters (created on demand).
    func join(_ id: String) -> RoomInfo {
        shard(for: id).rooms.withLock { rooms in
            let info: RoomInfo
            if let existing = rooms[id] {
                info = existing
            } else {
                info = RoomInfo(id: id)
                rooms[id] = info
            }
            info.online.add(1, ordering: .relaxed)
            return info
        }
    }

    /// Counts one member fewer; an emptied room is removed.
    func leave(_ info: RoomInfo) {
        shard(for: info.id).rooms.withLock { rooms in
            let now = info.online.subtract(1, ordering: .relaxed).newValue
            if now <= 0, rooms[info.id] === info {
                rooms.removeValue(forKey: info.id)
            }
        }
    }

    func info(for id: String) -> RoomInfo? {
        shard(for: id).rooms.withLock { $0[id] }
    }

    /// Local online count per room, rooms with at least one member only (what goim reports to Logic).
    func counts() -> [String: Int32] {
        var result: [String: Int32] = [:]
        for shard in shards {
            shard.rooms.withLock { rooms in
                for (id, info) in rooms {
                    let online = info.online.load(ordering: .relaxed)
                    if online > 0 { result[id] = online }
                }
            }
        }
        return result
    }

    /// Sets every local room's cluster-wide count from a `RenewOnline` reply (0 when absent), as goim's UpRoomsCount.
    func updateAllOnline(_ all: [String: Int32]) {
        for shard in shards {
            shard.rooms.withLock { rooms in
                for (id, info) in rooms {
                    info.allOnline.store(all[id] ?? 0, ordering: .relaxed)
                }
            }
        }
    }
}
