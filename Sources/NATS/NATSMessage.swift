import CNats

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A message received from NATS, copied out of libnats (no C memory is kept).
public struct NATSMessage: Sendable {
    public let subject: String
    public let reply: String?
    public let payload: [UInt8]
    public let headers: [String: [String]]

    public init(subject: String, reply: String? = nil, payload: [UInt8], headers: [String: [String]] = [:]) {
        self.subject = subject
        self.reply = reply
        self.payload = payload
        self.headers = headers
    }
}

extension NATSMessage {
    /// Copies a `natsMsg`. The caller still owns (and destroys) `msg`.
    init(copying msg: OpaquePointer) {
        let reply = natsMsg_GetReply(msg).map { String(cString: $0) }
        self.init(
            subject: String(cString: natsMsg_GetSubject(msg)),
            reply: reply?.isEmpty == false ? reply : nil,
            payload: payloadBytes(msg),
            headers: headerFields(msg))
    }
}

/// The payload as bytes; lengths are explicit, so NUL bytes survive.
func payloadBytes(_ msg: OpaquePointer) -> [UInt8] {
    let count = Int(natsMsg_GetDataLength(msg))
    guard count > 0, let data = natsMsg_GetData(msg) else { return [] }
    return Array(UnsafeRawBufferPointer(start: data, count: count))
}

private func headerFields(_ msg: OpaquePointer) -> [String: [String]] {
    var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>?
    var keyCount: Int32 = 0
    // NATS_NOT_FOUND when the message has no headers. The strings belong to the message,
    // the arrays to us (libnats documents that the caller frees them).
    guard natsMsgHeader_Keys(msg, &keys, &keyCount) == NATS_OK, let keys else { return [:] }
    defer { free(UnsafeMutableRawPointer(keys)) }
    var fields: [String: [String]] = [:]
    for index in 0..<Int(keyCount) {
        guard let key = keys[index] else { continue }
        var values: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        var valueCount: Int32 = 0
        guard natsMsgHeader_Values(msg, key, &values, &valueCount) == NATS_OK, let values else { continue }
        defer { free(UnsafeMutableRawPointer(values)) }
        fields[String(cString: key)] = (0..<Int(valueCount)).compactMap { values[$0].map { String(cString: $0) } }
    }
    return fields
}

/// Runs `body` with `strings` as a NULL-terminated C array of C strings (valid only inside `body`).
func withCStringArray<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>) throws -> R) rethrows -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    var pointers = copies.map { UnsafePointer<CChar>($0) } + [nil]
    return try pointers.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
}

/// `withCString` for an optional string: nil becomes a NULL pointer.
func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) throws -> R) rethrows -> R {
    guard let string else { return try body(nil) }
    return try string.withCString { try body($0) }
}

/// Hands a C pointer from the thread pool back to the task that owns it.
/// @unchecked Sendable: the pointer is moved across exactly once and then used by a single owner.
struct CPointer: @unchecked Sendable {
    let raw: OpaquePointer
}
