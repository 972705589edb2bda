import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One Linux network namespace per service, each with its own address on a bridge of its own, so that a cluster's
/// processes reach each other the way separate machines do (nothing may quietly depend on 127.0.0.1) and a test can
/// cut one path with iptables. The test process stays in the root namespace and reaches every service through the
/// bridge's address there.
///
/// Names carry the test process's pid and a random number (parallel runs do not collide; what a killed run left is
/// deleted by the next one); the subnet is `10.77.<n>.0/24` with an `n` no interface
/// of the machine uses yet. Only addresses inside that subnet are ever used. `remove()` deletes the namespaces (their
/// veth ends and iptables rules go with them) and the bridge; it also runs at exit for whatever a failing test left.
/// Needs root, `ip` and `iptables` (`unavailable` says what is missing).
public final class NetworkNamespaces: Sendable {
    public struct Member: Sendable {
        public let namespace: String
        public let address: String
    }

    /// The part of every name that tells runs apart: the test process's pid and a random number (10 hex digits).
    public let tag: String
    public let bridge: String
    /// The bridge's address in the root namespace: where the test process's connections come from.
    public let gateway: String
    public let members: [String: Member]
    private let removed = Atomic<Bool>(false)

    private static let ipPath = "/usr/sbin/ip"
    private static let iptablesPath = "/usr/sbin/iptables"
    private static let live = Mutex<[ObjectIdentifier: NetworkNamespaces]>([:])
    private static let registered: Void = {
        atexit { NetworkNamespaces.live.withLock { $0.values.forEach { $0.remove() } } }
    }()

    /// Why namespaces cannot be made here (not root, `ip` or `iptables` missing, or a container without the
    /// privileges: probed once by making and deleting a namespace), or nil when they can.
    public static let unavailable: String? = {
        if geteuid() != 0 { return "network namespaces need root (ip netns, veth, a bridge, iptables)" }
        for path in [ipPath, iptablesPath] where !FileManager.default.isExecutableFile(atPath: path) {
            return "\(path) is missing (apt-get install iproute2 iptables; scripts/install-deps)"
        }
        let probe = "goim-probe-\(String(format: "%06x", UInt32.random(in: 0..<0x100_0000)))"
        defer { _ = try? ip(["netns", "delete", probe]) }
        do {
            try ip(["netns", "add", probe])
            try run(ipPath, ["netns", "exec", probe, iptablesPath, "-L", "OUTPUT", "-n"])
        } catch {
            return "cannot make a network namespace here: \(error)"
        }
        return nil
    }()

    private init(tag: String, bridge: String, gateway: String, members: [String: Member]) {
        self.tag = tag
        self.bridge = bridge
        self.gateway = gateway
        self.members = members
    }

    /// Creates the bridge and one namespace per service (addresses .10, .11, … in service order).
    public static func create(services: [String]) throws -> NetworkNamespaces {
        _ = registered
        removeLeftovers()
        // Our pid, then a random part: what `removeLeftovers` reads back.
        let tag = String(format: "%06x%04x", UInt32(getpid()) & 0xFF_FFFF, UInt32.random(in: 0..<0x1_0000))
        let used = (try? run(ipPath, ["-4", "-o", "addr", "show"])) ?? ""
        let free = (1...254).filter { !used.contains(" 10.77.\($0).") }
        guard let octet = free.randomElement() else { throw NetworkNamespaceError("no free 10.77.x.0/24 subnet") }
        let subnet = "10.77.\(octet)"
        var members: [String: Member] = [:]
        for (index, service) in services.enumerated() {
            members[service] = Member(namespace: "goim-\(tag)-\(service)", address: "\(subnet).\(10 + index)")
        }
        let network = NetworkNamespaces(tag: tag, bridge: "gb\(tag)", gateway: "\(subnet).1", members: members)
        live.withLock { $0[ObjectIdentifier(network)] = network }
        do {
            try ip(["link", "add", network.bridge, "type", "bridge"])
            try ip(["addr", "add", "\(network.gateway)/24", "dev", network.bridge])
            try ip(["link", "set", network.bridge, "up"])
            for (index, service) in services.enumerated() {
                let member = members[service]!
                let (outside, inside) = ("gv\(tag)\(index)", "gp\(tag)\(index)")
                try ip(["netns", "add", member.namespace])
                try ip(["link", "add", outside, "type", "veth", "peer", "name", inside, "netns", member.namespace])
                try ip(["link", "set", outside, "master", network.bridge, "up"])
                try ip(["-n", member.namespace, "addr", "add", "\(member.address)/24", "dev", inside])
                try ip(["-n", member.namespace, "link", "set", inside, "up"])
                try ip(["-n", member.namespace, "link", "set", "lo", "up"])
            }
        } catch {
            network.remove()
            throw error
        }
        return network
    }

    public func address(_ service: String) -> String { members[service]!.address }

    /// What runs a program inside `service`'s namespace (`ip netns exec` execs it in place: same pid).
    public func launcher(_ service: String) -> [String] { [Self.ipPath, "netns", "exec", members[service]!.namespace] }

    /// Drops every packet `service` sends to `address` (iptables OUTPUT in its namespace): a partition from its side.
    public func drop(from service: String, to address: String) throws {
        try Self.run(Self.ipPath, ["netns", "exec", members[service]!.namespace, Self.iptablesPath, "-A", "OUTPUT", "-d", address, "-j", "DROP"])
    }

    /// Removes the rule `drop(from:to:)` added.
    public func heal(from service: String, to address: String) throws {
        try Self.run(Self.ipPath, ["netns", "exec", members[service]!.namespace, Self.iptablesPath, "-D", "OUTPUT", "-d", address, "-j", "DROP"])
    }

    /// Deletes the namespaces and the bridge. Idempotent; errors are ignored (what is gone is gone).
    public func remove() {
        guard !removed.exchange(true, ordering: .relaxed) else { return }
        for member in members.values { _ = try? Self.ip(["netns", "delete", member.namespace]) }
        _ = try? Self.ip(["link", "delete", bridge])
        Self.live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
    }

    /// Deletes the namespaces and bridges of test processes that no longer run (killed before their `atexit`).
    static func removeLeftovers() {
        guard let list = try? ip(["netns", "list"]) else { return }
        var dead = Set<String>()
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard parts.count >= 3, parts[0] == "goim", parts[1].count == 10, let pid = Int32(parts[1].prefix(6), radix: 16)
            else { continue }
            // Alive (or not ours to signal): leave it.
            if kill(pid, 0) == 0 || errno == EPERM { continue }
            _ = try? ip(["netns", "delete", name])
            dead.insert(String(parts[1]))
        }
        for tag in dead { _ = try? ip(["link", "delete", "gb\(tag)"]) }
    }

    @discardableResult
    private static func ip(_ arguments: [String]) throws -> String { try run(ipPath, arguments) }

    /// Runs a short command and waits for it (milliseconds: `ip` and `iptables` only); throws with its output when it fails.
    @discardableResult
    static func run(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw NetworkNamespaceError("\(path) \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(output)")
        }
        return output
    }
}

public struct NetworkNamespaceError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
