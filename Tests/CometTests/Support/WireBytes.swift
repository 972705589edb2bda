import Foundation
import GoIMProtocol
import NIOCore
import NIOPosix
import TestLogic
import TestSupport

/// goim bytes built by hand for byte-exact checks (independent of the comet's encoders).
enum WireBytes {
    /// One goim packet: packLen, headerLen 16, ver, op, seq, body (all big-endian).
    static func packet(operation: Int32, version: Int16 = 1, sequence: Int32 = 0, body: [UInt8] = []) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16 + body.count)
        append(UInt32(16 + body.count), to: &bytes)
        bytes += [0x00, 0x10]
        bytes += [UInt8(truncatingIfNeeded: UInt16(bitPattern: version) >> 8), UInt8(truncatingIfNeeded: UInt16(bitPattern: version))]
        append(UInt32(bitPattern: operation), to: &bytes)
        append(UInt32(bitPattern: sequence), to: &bytes)
        return bytes + body
    }

    static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes += [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    /// An unmasked server frame (FIN + `opcode`) around `payload`.
    static func serverFrame(opcode: UInt8 = 0x2, _ payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            bytes.append(UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            bytes += [126, UInt8(payload.count >> 8), UInt8(truncatingIfNeeded: payload.count)]
        } else {
            bytes.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: payload.count >> shift)) }
        }
        return bytes + payload
    }

    /// A masked client frame (FIN + `opcode`), as a browser sends it.
    static func clientFrame(opcode: UInt8 = 0x2, _ payload: [UInt8]) -> [UInt8] {
        let mask: [UInt8] = [0x37, 0xfa, 0x21, 0x3d]
        var bytes: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            bytes.append(0x80 | UInt8(payload.count))
        } else {
            precondition(payload.count <= 0xFFFF)
            bytes += [0x80 | 126, UInt8(payload.count >> 8), UInt8(truncatingIfNeeded: payload.count)]
        }
        bytes += mask
        for (index, byte) in payload.enumerated() { bytes.append(byte ^ mask[index % 4]) }
        return bytes
    }

    /// goim's room push as job sends it (op 9 envelope holding one op `operation` packet): what a TCP client gets
    /// (the inner packet) and what a WebSocket client gets (one frame with the envelope).
    static func roomPush(operation: Int32 = 1000, body: [UInt8]) -> (tcp: [UInt8], webSocket: [UInt8]) {
        let inner = packet(operation: operation, version: 1, sequence: 0, body: body)
        let envelope = packet(operation: 9, version: 1, sequence: 0, body: inner)
        return (inner, serverFrame(envelope))
    }

    /// Splits server frames (unmasked); throws on a truncated or masked frame.
    static func serverFrames(_ bytes: [UInt8]) throws -> [(opcode: UInt8, payload: [UInt8])] {
        var frames: [(opcode: UInt8, payload: [UInt8])] = []
        var offset = 0
        while offset < bytes.count {
            guard bytes.count - offset >= 2, bytes[offset + 1] & 0x80 == 0 else { throw TestFailure("bad frame at \(offset)") }
            var length = Int(bytes[offset + 1])
            var header = 2
            if length == 126 {
                guard bytes.count - offset >= 4 else { throw TestFailure("truncated frame header at \(offset)") }
                length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
                header = 4
            } else if length == 127 {
                guard bytes.count - offset >= 10 else { throw TestFailure("truncated frame header at \(offset)") }
                length = bytes[(offset + 2)..<(offset + 10)].reduce(0) { $0 << 8 | Int($1) }
                header = 10
            }
            guard bytes.count - offset >= header + length else { throw TestFailure("truncated frame at \(offset)") }
            frames.append((bytes[offset] & 0x0F, Array(bytes[(offset + header)..<(offset + header + length)])))
            offset += header + length
        }
        return frames
    }

    static let upgradeRequest = Array(
        ("GET /sub HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
}

extension RawClient {
    /// Waits until the bytes received so far contain `terminator`; returns (and drops) everything up to and
    /// including it.
    func read(through terminator: [UInt8], timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        var end = 0
        try await waitUntil(timeout: timeout) {
            let bytes = self.received
            guard bytes.count >= terminator.count else { return false }
            for start in 0...(bytes.count - terminator.count) where Array(bytes[start..<start + terminator.count]) == terminator {
                end = start + terminator.count
                return true
            }
            return false
        }
        return try await read(end)
    }

    /// Upgrades to WebSocket at `/sub` (the 101 response is read and dropped).
    func upgradeToWebSocket() async throws {
        try await send(WireBytes.upgradeRequest)
        let response = try await read(through: Array("\r\n\r\n".utf8))
        guard String(decoding: response, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
            throw TestFailure("upgrade refused: \(String(decoding: response, as: UTF8.self))")
        }
    }

    /// Sends op 7 (in a frame on WebSocket) and reads the op 8 reply; returns it.
    func authenticate(_ body: AuthBody, webSocket: Bool, sequence: Int32 = 1) async throws -> [UInt8] {
        let packet = WireBytes.packet(operation: 7, sequence: sequence, body: body.encoded())
        try await send(webSocket ? WireBytes.clientFrame(packet) : packet)
        return try await read(webSocket ? 18 : 16)
    }

    /// Closes with a TCP reset instead of a FIN (SO_LINGER with a zero timeout).
    func reset() async {
        if let provider = channel as? any SocketOptionProvider {
            try? await provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
        }
        await close()
    }

    /// Sends a FIN and keeps reading (half-close), as a client that is done sending does.
    func finishSending() async throws {
        try await channel.close(mode: .output)
    }
}
