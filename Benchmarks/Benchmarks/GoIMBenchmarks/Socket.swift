#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GoIMProtocol
import NIOCore
import Synchronization

struct SocketError: Error, CustomStringConvertible {
    let description: String
    init(_ what: String) { description = "\(what): \(String(cString: strerror(errno)))" }
}

/// Blocking loopback client sockets for the rig's setup (connect, authenticate); not on any hot path.
enum Socket {
    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError("socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            throw SocketError("connect to 127.0.0.1:\(port)")
        }
        return fd
    }

    /// Sends op 7 and reads the op 8 reply.
    static func authenticate(_ fd: Int32, mid: Int64, room: String) throws {
        let token = #"{"mid":\#(mid),"room_id":"\#(room)","platform":"bench","accepts":[1000]}"#
        var packet = ByteBuffer()
        _ = packet.writePacket(Packet(version: 1, operation: .auth, sequence: 1, body: ByteBuffer(string: token)))
        let bytes = Array(packet.readableBytesView)
        guard send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw SocketError("send auth") }
        var header = [UInt8](repeating: 0, count: PacketHeader.length)
        guard recv(fd, &header, header.count, Int32(MSG_WAITALL)) == header.count else { throw SocketError("read auth reply") }
        var reply = ByteBuffer(bytes: header)
        let length = Int(reply.readInteger(as: UInt32.self) ?? 0)
        _ = reply.readInteger(as: UInt16.self)
        _ = reply.readInteger(as: UInt16.self)
        let operation = reply.readInteger(as: Int32.self) ?? -1
        guard operation == Operation.authReply.rawValue else { throw SocketError("auth refused (op \(operation))") }
        if length > PacketHeader.length {
            var rest = [UInt8](repeating: 0, count: length - PacketHeader.length)
            _ = recv(fd, &rest, rest.count, Int32(MSG_WAITALL))
        }
    }
}

/// Reads every member socket on its own thread (`poll`, one fixed buffer) so the comet's writes never back up and
/// the benchmark process allocates nothing on the receiving side.
final class Drain: Sendable {
    private let running = Atomic<Bool>(true)
    private let finished = Atomic<Bool>(false)
    let bytes = Atomic<Int>(0)
    private let descriptors = Mutex<[Int32]>([])

    func add(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        guard fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw SocketError("fcntl") }
        descriptors.withLock { $0.append(fd) }
    }

    func start() {
        let fds = descriptors.withLock { $0 }
        Thread { [self] in run(fds) }.start()
    }

    private func run(_ fds: [Int32]) {
        let size = 1 << 16
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        defer {
            buffer.deallocate()
            finished.store(true, ordering: .releasing)
        }
        while running.load(ordering: .relaxed) {
            let ready = polls.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), 50) }
            guard ready > 0 else { continue }
            for index in polls.indices where polls[index].revents != 0 {
                polls[index].revents = 0
                while true {
                    let read = recv(polls[index].fd, buffer, size, 0)
                    if read <= 0 { break }
                    bytes.add(read, ordering: .relaxed)
                    if read < size { break }
                }
            }
        }
    }

    /// Stops the thread (within one poll timeout) and closes the sockets.
    func stop() {
        running.store(false, ordering: .relaxed)
        while !finished.load(ordering: .acquiring) { usleep(10_000) }
        for fd in descriptors.withLock({ $0 }) { close(fd) }
    }
}
