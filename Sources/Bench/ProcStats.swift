#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// CPU time and memory of a process, read from /proc: Linux only (elsewhere `read` gives nil and the bench reports
/// no CPU or RSS figures).
struct ProcStats: Sendable {
    let cpuSeconds: Double
    let rssBytes: Int

    static func read(pid: Int32) -> ProcStats? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        else { return nil }
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var rss = 0
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            rss = (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return ProcStats(cpuSeconds: (utime + stime) / ticks, rssBytes: rss)
    }
}

/// Raises the soft open-file limit to the hard limit (connections are file descriptors).
func raiseFileLimit() -> Int {
    #if canImport(Glibc)
    let resource = Int32(RLIMIT_NOFILE.rawValue)
    #else
    let resource = RLIMIT_NOFILE
    #endif
    var limit = rlimit()
    getrlimit(resource, &limit)
    #if canImport(Darwin)
    // Darwin refuses a soft limit above OPEN_MAX (the hard limit is often RLIM_INFINITY).
    limit.rlim_cur = min(limit.rlim_max, rlim_t(OPEN_MAX))
    #else
    limit.rlim_cur = limit.rlim_max
    #endif
    setrlimit(resource, &limit)
    getrlimit(resource, &limit)
    return Int(limit.rlim_cur)
}

/// Wall-clock nanoseconds (CLOCK_REALTIME), comparable across processes on one machine.
func wallNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
