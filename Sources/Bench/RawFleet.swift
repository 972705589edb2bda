import Atomics
import Foundation
import GoIMProtocol
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Connect-storm clients without an event loop: a few threads that each connect, send op 7 and wait for op 8 with
/// blocking calls, then hold the socket (no heartbeats, nothing counted).
///
/// In a storm the clients share the two cores with comet, logic and Redis. goim clients on NIO cost about 470 µs
/// of CPU per connection (bootstrap, pipeline, tasks), more than comet and logic together, so the bench itself
/// set the rate. Blocking calls cost the syscalls and a few thread wake-ups.
final class RawFleet: Sendable {
    let spec: FleetSpec
    let stats = FleetStats()
    let threads: Int
    private let sockets = NIOLockedValueBox<[Int32]>([])

    init(spec: FleetSpec, threads: Int? = nil) {
        self.spec = spec
        self.threads = max(1, min(threads ?? spec.concurrency, spec.count))
    }

    /// Opens every connection; returns when all were tried.
    func open() async {
        let remaining = ManagedAtomic(threads)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            for thread in 0..<threads {
                Thread.detachNewThread {
                    self.run(thread: thread)
                    if remaining.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing) == 0 { done.resume() }
                }
            }
        }
    }

    /// Connections `thread`, `thread + threads`, ... paced by `spec.rate`.
    private func run(thread: Int) {
        let interval = spec.rate > 0 ? 1.0 / spec.rate : 0
        let start = Date()
        var index = thread
        while index < spec.count {
            if interval > 0 {
                let wait = interval * Double(index) - Date().timeIntervalSince(start)
                if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
            }
            openOne(index: index)
            index += threads
        }
    }

    private func openOne(index: Int) {
        stats.markStarted()
        let host = spec.hosts[index % spec.hosts.count]
        guard !spec.tcpPorts.isEmpty else {
            stats.failed.wrappingIncrement(ordering: .relaxed)
            return
        }
        let port = spec.tcpPorts[(index / max(1, spec.hosts.count)) % spec.tcpPorts.count]
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else {
            stats.failed.wrappingIncrement(ordering: .relaxed)
            return
        }
        #if !os(Linux)
        // No MSG_NOSIGNAL outside Linux: the socket itself must not raise SIGPIPE.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if spec.receiveBuffer ?? 0 > 0 {
            var size = Int32(spec.receiveBuffer!)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        guard connect(fd, host: host == "localhost" ? "127.0.0.1" : host, port: port), authenticate(fd, index: index) else {
            close(fd)
            stats.failed.wrappingIncrement(ordering: .relaxed)
            return
        }
        stats.markAuthed()
        sockets.withLockedValue { $0.append(fd) }
    }

    private func connect(_ fd: Int32, host: String, port: Int) -> Bool {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return false }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                systemConnect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if result == 0 { stats.connected.wrappingIncrement(ordering: .relaxed) }
        return result == 0
    }

    /// Sends op 7 with goim's JSON body and waits for the op 8 reply.
    private func authenticate(_ fd: Int32, index: Int) -> Bool {
        let body = AuthBody(mid: spec.firstMid + Int64(index), key: "", roomID: spec.room, platform: "bench", accepts: spec.accepts)
        var packet = ByteBuffer()
        packet.writePacket(Packet(operation: .auth, sequence: 1, body: ByteBuffer(bytes: body.encoded())))
        let sent = packet.withUnsafeReadableBytes { send(fd, $0.baseAddress, $0.count, noSignal) }
        guard sent == packet.readableBytes else { return false }
        var header = [UInt8](repeating: 0, count: PacketHeader.length)
        guard recv(fd, &header, header.count, Int32(MSG_WAITALL)) == header.count else { return false }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        let operation = Int32(header[8]) << 24 | Int32(header[9]) << 16 | Int32(header[10]) << 8 | Int32(header[11])
        guard operation == Operation.authReply.rawValue, length >= PacketHeader.length, length < 1 << 20 else { return false }
        if length > PacketHeader.length {
            var rest = [UInt8](repeating: 0, count: length - PacketHeader.length)
            guard recv(fd, &rest, rest.count, Int32(MSG_WAITALL)) == rest.count else { return false }
        }
        return true
    }

    func closeAll() {
        let all = sockets.withLockedValue { list in
            defer { list.removeAll() }
            return list
        }
        for fd in all { close(fd) }
    }
}

#if canImport(Glibc)
private let systemConnect = Glibc.connect
private let noSignal = Int32(MSG_NOSIGNAL)
#else
private let systemConnect = Darwin.connect
/// Darwin has no MSG_NOSIGNAL; the socket has SO_NOSIGPIPE instead.
private let noSignal: Int32 = 0
#endif
