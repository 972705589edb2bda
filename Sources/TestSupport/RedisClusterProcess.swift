import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A Redis Cluster for tests, from Debian's redis-server: `masters` masters with one replica each on free loopback
/// ports, each node in its own temporary directory (nodes.conf and no persistence), made with
/// `redis-cli --cluster create … --cluster-replicas 1`. A short `cluster-node-timeout` makes failovers quick.
public final class RedisClusterProcess: Sendable {
    public struct Node: Sendable {
        public let process: ServerProcess
        public var port: Int { process.port }
        public var address: String { "127.0.0.1:\(port)" }
    }

    public let nodes: [Node]
    public let nodeTimeout: Duration

    private init(nodes: [Node], nodeTimeout: Duration) {
        self.nodes = nodes
        self.nodeTimeout = nodeTimeout
    }

    /// Every node's `host:port`, for `GOIM_REDIS_CLUSTER` (any one is enough as a seed; all make it sturdier).
    public var addresses: [String] { nodes.map(\.address) }

    public static func start(masters: Int = 3, nodeTimeout: Duration = .milliseconds(1000)) async throws -> RedisClusterProcess {
        let executable = try TestServers.locate("redis-server")
        var nodes: [Node] = []
        for index in 0..<(masters * 2) {
            let port = TestServers.freePort()
            // The bus port is chosen too (redis-server's default, port + 10000, may be taken, even by another test's node).
            let busPort = TestServers.freePort()
            let directory = try TestServers.temporaryDirectory("redis-cluster-\(index)")
            let arguments = [
                "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", directory.path, "--daemonize", "no", "--protected-mode", "no",
                "--cluster-enabled", "yes", "--cluster-port", "\(busPort)", "--cluster-config-file", directory.appendingPathComponent("nodes.conf").path,
                // A replica that never synced refuses to fail over: start the first sync at once, not after 5 s.
                "--repl-diskless-sync-delay", "0",
                "--cluster-node-timeout", "\(nodeTimeout.components.seconds * 1000 + nodeTimeout.components.attoseconds / 1_000_000_000_000_000)",
            ]
            nodes.append(Node(process: ServerProcess(
                name: "redis-\(port)", executable: executable, arguments: arguments, port: port, directory: directory)))
        }
        let cluster = RedisClusterProcess(nodes: nodes, nodeTimeout: nodeTimeout)
        do {
            for node in nodes { try await node.process.start() }
            let output = try await redisCLI(
                ["--cluster", "create"] + cluster.addresses + ["--cluster-replicas", "1", "--cluster-yes"])
            guard output.contains("[OK] All 16384 slots covered") else { throw RedisClusterError.createFailed(output) }
            try await cluster.waitUntilHealthy()
        } catch {
            await cluster.stop()
            throw error
        }
        return cluster
    }

    public func stop() async {
        for node in nodes { await node.process.stop() }
    }

    public var running: [Node] { nodes.filter { $0.process.pid != nil } }

    /// Waits until every running node says `cluster_state:ok`, every slot is served by a running master and every
    /// running replica's link to its master is up.
    public func waitUntilHealthy(timeout: Duration = .seconds(30)) async throws {
        try await waitUntil("Redis Cluster state ok on every node", timeout: timeout) {
            for node in running {
                guard let info = try? await Self.redisCLI(["-p", "\(node.port)", "CLUSTER", "INFO"]),
                    info.contains("cluster_state:ok")
                else { return false }
            }
            let masters = try await self.masters()
            guard !masters.isEmpty, masters.allSatisfy({ master in running.contains { $0.port == master.port } }) else {
                return false
            }
            // Every running replica has synced with its master: one that has not would refuse to fail over.
            for node in running {
                let replication = (try? await Self.redisCLI(["-p", "\(node.port)", "INFO", "replication"])) ?? ""
                if replication.contains("role:slave") && !replication.contains("master_link_status:up") { return false }
            }
            return true
        }
    }

    /// The masters serving slots, as seen by a running node: port and node id, with the port of one replica.
    public func masters() async throws -> [(port: Int, id: String, replicaPort: Int?)] {
        guard let node = running.first else { return [] }
        let text = try await Self.redisCLI(["-p", "\(node.port)", "CLUSTER", "NODES"])
        var masters: [(port: Int, id: String)] = []
        var replicas: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 8, let port = Self.port(fields[1]) else { continue }
            let flags = fields[2]
            // A failed master keeps its slots until its replica takes them over: it still counts (as not running).
            if flags.contains("master") && fields.count > 8 {
                masters.append((port, String(fields[0])))
            } else if flags.contains("slave") && !flags.contains("fail") {
                replicas[String(fields[3])] = port
            }
        }
        return masters.map { ($0.port, $0.id, replicas[$0.id]) }.sorted { $0.port < $1.port }
    }

    /// The port of the master serving `key` (CLUSTER KEYSLOT, then CLUSTER SLOTS).
    public func masterPort(forKey key: String) async throws -> Int? {
        guard let node = running.first else { return nil }
        let slot = Int(try await Self.redisCLI(["-p", "\(node.port)", "CLUSTER", "KEYSLOT", key]).trimmingCharacters(in: .whitespacesAndNewlines))
        let nodes = try await Self.redisCLI(["-p", "\(node.port)", "CLUSTER", "NODES"])
        for line in nodes.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 8, fields[2].contains("master"), !fields[2].contains("fail"), let slot else { continue }
            for range in fields[8...] {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                if bounds.count == 2, (bounds[0]...bounds[1]).contains(slot) { return Self.port(fields[1]) }
                if bounds.count == 1, bounds[0] == slot { return Self.port(fields[1]) }
            }
        }
        return nil
    }

    /// `CLUSTER FAILOVER` on `replicaPort`: a coordinated switch, no write lost. Returns once the replica is master.
    public func failover(replicaPort: Int, timeout: Duration = .seconds(20)) async throws {
        _ = try await Self.redisCLI(["-p", "\(replicaPort)", "CLUSTER", "FAILOVER"])
        try await waitUntil("replica \(replicaPort) promoted", timeout: timeout) {
            let role = try await Self.redisCLI(["-p", "\(replicaPort)", "ROLE"])
            return role.hasPrefix("master")
        }
    }

    public func node(port: Int) -> Node? { nodes.first { $0.port == port } }

    /// Runs redis-cli with `arguments` and returns what it printed. Waits by sleeping, not by blocking a thread.
    @discardableResult
    public static func redisCLI(_ arguments: [String], timeout: Duration = .seconds(30)) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestServers.locate("redis-cli"))
        process.arguments = arguments
        let directory = try TestServers.temporaryDirectory("redis-cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        let outputURL = directory.appendingPathComponent("out")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputURL)
        defer { try? output.close() }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.processIdentifier, SIGKILL)
                throw RedisClusterError.commandTimedOut(arguments.joined(separator: " "))
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
    }

    /// `127.0.0.1:7000@17000` → 7000.
    private static func port(_ field: Substring) -> Int? {
        let address = field.split(separator: "@").first ?? field
        return address.split(separator: ":").last.flatMap { Int($0) }
    }
}

public enum RedisClusterError: Error, CustomStringConvertible {
    case createFailed(String)
    case commandTimedOut(String)

    public var description: String {
        switch self {
        case .createFailed(let output): return "redis-cli --cluster create failed:\n\(output)"
        case .commandTimedOut(let command): return "redis-cli \(command) did not finish in time"
        }
    }
}
