import GoIMConfig
import Primitives
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which accepted sockets a comet keeps: at most `cap` open connections in all (derived from the process's
/// file-descriptor limit unless configured), at most `perIP` from one address, and new connections from one address
/// at most at `connectRate`. A refused socket is closed at once, so the comet never runs out of descriptors for what
/// it needs besides clients (Redis, gRPC, logs), and never sits at EMFILE with clients stuck in the accept backlog.
final class ConnectionAdmission: Sendable {
    enum Refusal: Equatable {
        case cap
        case perIP
        case rate
    }

    /// Open connections allowed in all.
    let cap: Int
    private let open = Atomic<Int>(0)
    let ips = IPTable()
    private let perIPLimit: Int
    private let rate: KeyedRateLimiter?
    private let exemptLoopback: Bool

    init(limits: CometConfiguration.Limits) {
        cap = Self.cap(limits)
        perIPLimit = limits.maxConnectionsPerIP
        rate =
            limits.connectRatePerIP > 0 ? KeyedRateLimiter(rate: limits.connectRatePerIP, burst: limits.connectBurstPerIP) : nil
        exemptLoopback = limits.exemptLoopback
    }

    /// `limits.maxConnections`, or the soft RLIMIT_NOFILE minus `reservedDescriptors` (at least 16).
    static func cap(_ limits: CometConfiguration.Limits) -> Int {
        if limits.maxConnections > 0 { return limits.maxConnections }
        return max(16, descriptorLimit() - limits.reservedDescriptors)
    }

    static func descriptorLimit() -> Int {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur != rlim_t.max else { return 1 << 20 }
        return Int(clamping: limit.rlim_cur)
    }

    /// Counts the connection in, or says why not (then nothing is counted).
    func admit(ip: String) -> Refusal? {
        let (_, now) = open.add(1, ordering: .relaxed)
        guard now <= cap else {
            open.subtract(1, ordering: .relaxed)
            return .cap
        }
        let limited = !(exemptLoopback && IPAddressLiteral.isLoopback(ip))
        if limited, let rate, rate.take(ip) != nil {
            open.subtract(1, ordering: .relaxed)
            return .rate
        }
        guard ips.acquire(ip, limit: limited ? perIPLimit : 0) else {
            open.subtract(1, ordering: .relaxed)
            return .perIP
        }
        return nil
    }

    /// The connection admitted for `ip` has closed.
    func release(ip: String) {
        ips.release(ip)
        open.subtract(1, ordering: .relaxed)
    }

    var openCount: Int { open.load(ordering: .relaxed) }
}
