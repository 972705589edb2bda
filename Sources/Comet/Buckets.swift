import GoIMProtocol
import NIOCore
import Synchronization

/// What a bucket stores per key: the connection's id (to tell a replaced connection from its successor) and the
/// handler, reachable only on its own event loop.
struct BucketEntry: Sendable {
    let id: UInt64
    let handler: NIOLoopBound<ConnectionHandler>

    var eventLoop: any EventLoop { handler.eventLoop }
}

/// goim's buckets: authenticated connections by key, sharded by `cityHash32(key) % size`, each shard behind its own
/// lock. Only key lookups (`PushMsg`), same-key replacement and counting use them; rooms and broadcasts use the
/// per-event-loop registries instead.
final class Buckets: Sendable {
    final class Bucket: Sendable {
        let entries = Mutex<[String: BucketEntry]>([:])
    }

    let buckets: [Bucket]

    init(size: Int) {
        precondition(size > 0, "bucket.size must be positive")
        buckets = (0..<size).map { _ in Bucket() }
    }

    func bucket(for key: String) -> Bucket {
        buckets[Int(key.cityHash32 % UInt32(buckets.count))]
    }

    /// Files `entry` under `key`; returns the connection it replaced, if any (goim kicks that one).
    /// The kick happens after the lock is released (goim bug 16: it blocked while holding it).
    func put(key: String, entry: BucketEntry) -> BucketEntry? {
        bucket(for: key).entries.withLock { entries in
            let old = entries.updateValue(entry, forKey: key)
            return old?.id == entry.id ? nil : old
        }
    }

    /// Removes `key` only if it still maps to connection `id` (a replaced connection must not remove its successor:
    /// goim fix #377). Returns whether this connection was still the holder.
    @discardableResult
    func remove(key: String, id: UInt64) -> Bool {
        bucket(for: key).entries.withLock { entries in
            guard entries[key]?.id == id else { return false }
            entries.removeValue(forKey: key)
            return true
        }
    }

    func entry(for key: String) -> BucketEntry? {
        bucket(for: key).entries.withLock { $0[key] }
    }

    /// Authenticated connections on this comet (goim's `conn_count`).
    var count: Int {
        buckets.reduce(0) { total, bucket in total + bucket.entries.withLock { $0.count } }
    }
}

/// Open connections per remote IP (authenticated or not): the per-IP limit and goim's `ip_count`.
/// One counter per connection, taken at accept and given back at close, so counts cannot drift (goim bug 15).
final class IPTable: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    /// Counts one more connection from `ip`; false (and nothing counted) when `limit` > 0 is already reached.
    func acquire(_ ip: String, limit: Int) -> Bool {
        counts.withLock { counts in
            let current = counts[ip, default: 0]
            if limit > 0 && current >= limit { return false }
            counts[ip] = current + 1
            return true
        }
    }

    func release(_ ip: String) {
        counts.withLock { counts in
            guard let current = counts[ip] else { return }
            if current <= 1 { counts.removeValue(forKey: ip) } else { counts[ip] = current - 1 }
        }
    }

    /// Distinct remote IPs with at least one connection.
    var distinctCount: Int { counts.withLock { $0.count } }
}
