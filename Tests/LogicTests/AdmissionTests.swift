import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing

@testable import Logic

#if canImport(Glibc)
import Glibc
#endif

@Suite("HTTP admission: per-IP rate and in-flight cap")
struct HTTPAdmissionTests {
    static let remote = try! SocketAddress(ipAddress: "203.0.113.7", port: 40000)
    static let other = try! SocketAddress(ipAddress: "203.0.113.8", port: 40000)
    static let loopback = try! SocketAddress(ipAddress: "127.0.0.1", port: 40000)

    @Test("an IP gets its burst, then its rate; others and loopback are not affected")
    func tokenBucket() {
        let admission = HTTPAdmission(limits: .init(ratePerIP: 2, burstPerIP: 3, maxConcurrentRequests: 0))
        let start = ContinuousClock.now
        for _ in 0..<3 { #expect(admission.admit(Self.remote, now: start) == nil) }
        #expect(admission.admit(Self.remote, now: start) == .rate(retryAfterSeconds: 1))
        #expect(admission.admit(Self.other, now: start) == nil)
        for _ in 0..<100 { #expect(admission.admit(Self.loopback, now: start) == nil) }
        // Half a second later, one token (2 per second) is back.
        #expect(admission.admit(Self.remote, now: start + .milliseconds(500)) == nil)
        #expect(admission.admit(Self.remote, now: start + .milliseconds(500)) != nil)
        // The bucket never holds more than the burst.
        let later = start + .seconds(60)
        for _ in 0..<3 { #expect(admission.admit(Self.remote, now: later) == nil) }
        #expect(admission.admit(Self.remote, now: later) != nil)
    }

    @Test("requests over maxConcurrentRequests are refused until one finishes")
    func inFlightCap() {
        let admission = HTTPAdmission(limits: .init(ratePerIP: 0, burstPerIP: 1, maxConcurrentRequests: 2))
        #expect(admission.admit(Self.remote) == nil)
        #expect(admission.admit(Self.loopback) == nil)
        #expect(admission.admit(Self.other) == .concurrency)
        admission.finish()
        #expect(admission.admit(Self.other) == nil)
    }

    @Test("a flood of distinct addresses does not grow the table beyond its bound")
    func boundedTable() throws {
        var limits = HTTPAdmission.Limits(ratePerIP: 1, burstPerIP: 10, maxConcurrentRequests: 0)
        limits.maxTrackedIPs = 1000
        let admission = HTTPAdmission(limits: limits)
        let now = ContinuousClock.now
        for index in 0..<10_000 {
            let address = try SocketAddress(ipAddress: "10.\(index >> 16).\((index >> 8) & 255).\(index & 255)", port: 1)
            _ = admission.admit(address, now: now)
        }
        #expect(admission.trackedIPs <= 1000)
    }
}

@Suite("HTTP admission through logic", .startsServers)
struct HTTPAdmissionServerTests {
    /// An IPv4 address of this machine other than loopback: requests from it are rate limited.
    static func externalIPv4() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            guard getnameinfo(address, socklen_t(MemoryLayout<sockaddr_in>.size), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0
            else { continue }
            let text = String(cString: host)
            if !text.hasPrefix("127.") { return text }
        }
        return nil
    }

    @Test("a connection that sends nothing (or half a request) is closed after httpServer.idleTimeout")
    func idleConnectionsAreClosed() async throws {
        try await LogicHarness.run({ $0.httpServer.idleTimeout = .milliseconds(500) }) { h in
            for partial in ["", "POST /goim/push/all?operation=1 HTTP/1.1\r\nHost: x\r\n"] {
                let fd = try LoopbackSocket.connect(port: h.httpPort, receiveTimeout: 5)
                defer { close(fd) }
                _ = partial.withCString { send(fd, $0, strlen($0), 0) }
                let started = ContinuousClock.now
                var byte: UInt8 = 0
                let received = recv(fd, &byte, 1, 0)
                #expect(received == 0 || (received < 0 && errno == ECONNRESET), "still open after \(ContinuousClock.now - started)")
                #expect(ContinuousClock.now - started < .seconds(4))
            }
        }
    }

    @Test("a client over its rate gets HTTP 429 in goim's envelope with Retry-After; loopback and /health are not limited")
    func rateLimitedOverHTTP() async throws {
        let ip = try #require(Self.externalIPv4(), "this machine has no IPv4 address besides loopback")
        try await LogicHarness.run({
            $0.httpServer.addr.host = "0.0.0.0"
            $0.httpServer.pushToken = "t"
            $0.httpServer.rateLimit = 0.5
            $0.httpServer.rateBurst = 2
        }) { h in
            try await TestClient.withClient(host: ip, port: h.httpPort) { client in
                for _ in 0..<2 { #expect(try await client.get("/goim/online/total").status == .ok) }
                let refused = try await client.get("/goim/online/total")
                #expect(refused.status == .tooManyRequests)
                #expect(refused.headers[.retryAfter] == "2")
                #expect(refused.body.map { String(buffer: $0) }
                    == #"{"code":-429,"message":"rate limit: too many requests from this address (httpServer.rateLimit)"}"#)
                #expect(try await client.get("/health").status == .ok)
            }
            for _ in 0..<5 { #expect(try await h.get("/goim/online/total").status == 200) }
        }
    }
}
