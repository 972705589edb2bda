#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether a host string is a numeric IP address, and of which family: chooses between an address and a DNS lookup
/// (gRPC targets), and tells IPv6 literals apart for socket addresses and `[host]:port` formatting.
public enum IPAddressLiteral: Sendable, Equatable {
    case v4
    case v6

    /// nil for a host name (or anything that is not a complete numeric address). Brackets around IPv6 are accepted.
    public init?(_ host: String) {
        var text = Substring(host)
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, String(text), &v4) == 1 {
            self = .v4
        } else if inet_pton(AF_INET6, String(text), &v6) == 1 {
            self = .v6
        } else {
            return nil
        }
    }

    /// `host` as it stands before `:port`: IPv6 literals in brackets.
    public static func hostForURL(_ host: String) -> String {
        IPAddressLiteral(host) == .v6 && !host.hasPrefix("[") ? "[\(host)]" : host
    }

    /// Whether `host` names this machine's loopback interface only (`localhost`, 127.0.0.0/8, `::1`): a listener
    /// bound there cannot be reached from another machine.
    public static func isLoopback(_ host: String) -> Bool {
        var text = Substring(host)
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        if text.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, String(text), &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, String(text), &v6) == 1 else { return false }
        return withUnsafeBytes(of: &v6) { bytes in bytes.dropLast().allSatisfy { $0 == 0 } && bytes.last == 1 }
    }

    /// Whether `host` is a wildcard bind address (every interface).
    public static func isWildcard(_ host: String) -> Bool {
        host.isEmpty || host == "0.0.0.0" || host == "::" || host == "[::]"
    }
}
