import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
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
/// first, and a push that the kernel does not take whole continues through NIO. TLS connections never get a
/// descriptor (their bytes must pass the TLS handler).
///
/// A descriptor is only ever used while NIO's socket behind it is open: `ConnectionHandler` forgets it before every
/// close NIO is told about, and checks `Channel.isActive` before each write (see `ConnectionHandler.deliver`).
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

    /// `send(2)` flags: never block; never raise SIGPIPE. Linux has `MSG_NOSIGNAL` for the latter. Darwin has no such
    /// flag: there the socket itself carries `SO_NOSIGPIPE` (NIO sets `F_SETNOSIGPIPE` on every socket it creates or
    /// accepts on Darwin, and `descriptor(of:)` sets `SO_NOSIGPIPE` once more, not relying on that).
    #if os(Linux) || os(Android)
    private static let sendFlags = Int32(MSG_DONTWAIT | MSG_NOSIGNAL)
    #else
    private static let sendFlags = Int32(MSG_DONTWAIT)
    #endif

    static func write(_ buffer: ByteBuffer, to descriptor: CInt) -> Outcome {
        buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while true {
                let result = send(descriptor, bytes.baseAddress! + offset, bytes.count - offset, sendFlags)
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

    /// A connection's descriptor before its first push looks it up: a connection that is never pushed to never pays
    /// for it.
    static let unresolved: CInt = -2

    static func describe(errno: Int32) -> String {
        String(cString: strerror(errno))
    }

    /// The descriptor of an accepted NIO socket channel, or nil when the channel has none (not a socket channel, or
    /// already closed). Must be called on the channel's event loop.
    ///
    /// It comes from NIO's documented accessor (`ChannelPipeline.SynchronousOperations.withUnsafeTransportIfAvailable`,
    /// swift-nio 2.101: `SocketChannel` conforms to `NIOTransportAccessibleChannelCore` with `NIOBSDSocket.Handle`),
    /// not from NIO's stored properties: no reflection, no dependence on NIO's private layout, and no syscall on
    /// Linux. NIO's contract for it is "do not close the transport or break NIO's invariants": we only `send` while
    /// NIO's own queue is empty, and stop before NIO closes the socket.
    static func descriptor(of channel: any Channel) -> CInt? {
        let handle = try? channel.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) {
            $0
        }
        guard let handle, handle >= 0 else { return nil }
        #if !(os(Linux) || os(Android))
        // No MSG_NOSIGNAL here: make sure a write to a reset peer cannot raise SIGPIPE.
        var one: CInt = 1
        guard setsockopt(handle, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<CInt>.size)) == 0 else { return nil }
        #endif
        return handle
    }
}

/// Sent inbound by handlers that write through NIO behind `ConnectionHandler`'s back (the WebSocket adapter's
/// pong and close frames), so that it stops writing directly until NIO's queue is empty again.
struct NIOOutboundActivity: Sendable {}
