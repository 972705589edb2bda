import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Fan-out writes straight to a client's socket, skipping NIO's outbound path.
///
/// A room push is written to thousands of sockets in a row. Through NIO each write crosses the pipeline, the
/// pending-writes queue and its bookkeeping; profiles of a 2,000-client room showed that path costing about 40% of
/// comet's CPU per delivery (the rest being the kernel's `write`). Writing the pre-encoded bytes with one
/// `send(2)` when NIO has nothing queued for the socket costs the syscall and little else.
///
/// Order is kept because a direct write happens only while NIO's queue for the channel is empty
/// (`bufferedWritableBytes == 0`): whatever NIO holds (an unflushed reply, a partial write, a WebSocket pong) goes out
/// first, and a push that the kernel does not take whole continues through NIO. The descriptor is dropped on
/// `channelInactive`, which NIO fires on the event loop right after closing the socket, before it can be reused.
/// TLS connections never get a descriptor (their bytes must pass the TLS handler).
enum DirectWriter {
    /// What `write` did.
    enum Outcome {
        /// The kernel took every byte.
        case complete
        /// The kernel took `written` bytes (maybe 0) and would block: the rest must go through NIO.
        case partial(written: Int)
        /// The socket failed (peer reset, broken pipe...).
        case failed(errno: Int32)
    }

    static func write(_ buffer: ByteBuffer, to descriptor: CInt) -> Outcome {
        buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while true {
                let result = send(descriptor, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
                if result >= 0 {
                    offset += result
                    if offset == bytes.count { return .complete }
                    continue  // a short write: try the rest once more, the next call says EAGAIN if full
                }
                let error = errno
                if error == EINTR { continue }
                if error == EAGAIN || error == EWOULDBLOCK { return .partial(written: offset) }
                return .failed(errno: error)
            }
        }
    }

    /// A connection's descriptor before its first push looks it up. Finding it costs a few microseconds
    /// (reflection, two syscalls): deferred to the first push, a connection that is never pushed to never pays it
    /// (it was 6-7% of comet's CPU per connection in a connect storm when done at accept).
    static let unresolved: CInt = -2

    static func describe(errno: Int32) -> String {
        String(cString: strerror(errno))
    }

    /// The descriptor of an accepted NIO socket channel, or nil when it cannot be found with certainty.
    ///
    /// NIO does not publish a channel's descriptor; it is read from the channel's stored properties by reflection
    /// and then verified against the kernel: the descriptor must be a socket whose local and peer ports are the
    /// channel's. Any mismatch (another NIO version with another layout, say) leaves the connection on NIO's path,
    /// which is correct, only slower; `CometTests` check that the direct path is in use with the pinned NIO.
    static func descriptor(of channel: any Channel) -> CInt? {
        guard let socket = storedProperty("socket", of: channel),
            let handle = storedProperty("descriptor", of: socket) as? CInt, handle >= 0,
            let local = channel.localAddress?.port, let remote = channel.remoteAddress?.port
        else { return nil }
        guard port(of: handle, peer: false) == local, port(of: handle, peer: true) == remote else { return nil }
        return handle
    }

    /// Where a stored property was found: the class level (0 = the object's own class) and the child's position.
    private struct FieldPath: Sendable, Hashable {
        var level: Int
        var index: Int
    }

    /// Positions found once per (type, name): walking every child of NIO's channel classes on each accept cost
    /// about 6% of comet's CPU per connection in a connect storm.
    private static let fieldPaths = Mutex<[String: FieldPath]>([:])

    private static func storedProperty(_ name: String, of value: Any) -> Any? {
        let key = "\(ObjectIdentifier(type(of: value) as Any.Type)).\(name)"
        if let path = fieldPaths.withLock({ $0[key] }) {
            var mirror: Mirror? = Mirror(reflecting: value)
            for _ in 0..<path.level { mirror = mirror?.superclassMirror }
            if let mirror, path.index < mirror.children.count {
                let child = mirror.children[mirror.children.index(mirror.children.startIndex, offsetBy: path.index)]
                if child.label == name { return child.value }
            }
        }
        var mirror: Mirror? = Mirror(reflecting: value)
        var level = 0
        while let current = mirror {
            for (index, child) in current.children.enumerated() where child.label == name {
                fieldPaths.withLock { $0[key] = FieldPath(level: level, index: index) }
                return child.value
            }
            mirror = current.superclassMirror
            level += 1
        }
        return nil
    }

    private static func port(of descriptor: CInt, peer: Bool) -> Int? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                peer ? getpeername(descriptor, $0, &length) : getsockname(descriptor, $0, &length)
            }
        }
        guard result == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
        default:
            return nil
        }
    }
}

/// Sent inbound by handlers that write through NIO behind `ConnectionHandler`'s back (the WebSocket adapter's
/// pong and close frames), so that it stops writing directly until NIO's queue is empty again.
struct NIOOutboundActivity: Sendable {}
