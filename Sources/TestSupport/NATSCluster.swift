import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A nats-server cluster for tests: `size` servers on free loopback ports, routes between all of them, JetStream on
/// each with its store in the server's temporary directory (so a node killed and started again rejoins with its
/// data), and a monitoring port per server, which is how tests find the stream leader (`/jsz`) and which server a
/// client is connected to (`/connz`). Works with Debian's nats-server 2.9.10 (JetStream clustering, R3 streams).
public final class NATSCluster: Sendable {
    public struct Node: Sendable {
        /// The server name (`-n`): what `/jsz` reports as a stream's leader.
        public let name: String
        public let process: ServerProcess
        public let clientPort: Int
        public let clusterPort: Int
        public let monitorPort: Int

        public var url: String { "nats://127.0.0.1:\(clientPort)" }
    }

    public let nodes: [Node]

    private init(nodes: [Node]) {
        self.nodes = nodes
    }

    /// Every node's client URL, for `GOIM_NATS_URLS`.
    public var urls: [String] { nodes.map(\.url) }

    /// Starts the servers and waits until JetStream's meta group has elected a leader that every node knows.
    public static func start(size: Int = 3, clusterName: String = "goim") async throws -> NATSCluster {
        let ports = (0..<size).map { _ in (TestServers.freePort(), TestServers.freePort(), TestServers.freePort()) }
        let routes = ports.map { "nats://127.0.0.1:\($0.1)" }.joined(separator: ",")
        var nodes: [Node] = []
        let executable = try TestServers.locate("nats-server")
        for (index, (client, cluster, monitor)) in ports.enumerated() {
            let name = "n\(index + 1)"
            let directory = try TestServers.temporaryDirectory("nats-\(name)")
            let arguments = [
                "-a", "127.0.0.1", "-p", "\(client)", "-n", name, "-m", "\(monitor)",
                "--cluster_name", clusterName, "--cluster", "nats://127.0.0.1:\(cluster)", "--routes", routes,
                "-js", "-sd", directory.appendingPathComponent("js").path,
            ]
            let process = ServerProcess(
                name: "nats-\(name)", executable: executable, arguments: arguments, port: client, directory: directory)
            nodes.append(Node(name: name, process: process, clientPort: client, clusterPort: cluster, monitorPort: monitor))
        }
        let cluster = NATSCluster(nodes: nodes)
        do {
            for node in nodes { try await node.process.start() }
            try await cluster.waitForMetaLeader()
        } catch {
            await cluster.stop()
            throw error
        }
        return cluster
    }

    public func stop() async {
        for node in nodes { await node.process.stop() }
    }

    /// The nodes whose process is running.
    public var running: [Node] { nodes.filter { $0.process.pid != nil } }

    public func node(named name: String) -> Node? { nodes.first { $0.name == name } }

    /// Waits until every running node reports the same JetStream meta leader (a cluster that can create streams).
    public func waitForMetaLeader(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let leaders = running.map { node -> String? in
                let meta = (try? Self.monitor("/jsz", port: node.monitorPort))?["meta_cluster"] as? [String: Any]
                return meta?["leader"] as? String
            }
            if let first = leaders.first, let leader = first, !leader.isEmpty, leaders.allSatisfy({ $0 == leader }) {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LoopbackSocket.Failure(description: "the NATS cluster elected no JetStream meta leader in \(timeout)")
    }

    /// The name of the server leading stream `stream` (its Raft group's leader, which stores and acknowledges
    /// publishes), as the running nodes report it in `/jsz`; nil while there is none (an election is on).
    public func streamLeader(_ stream: String) -> String? {
        leaders(stream).stream
    }

    /// The leaders of stream `stream` and of its consumers (by durable name), from the first running node that
    /// reports a stream leader.
    public func leaders(_ stream: String) -> (stream: String?, consumers: [String: String]) {
        for node in running {
            guard let jsz = try? Self.monitor("/jsz?accounts=true&streams=true&consumers=true", port: node.monitorPort),
                let accounts = jsz["account_details"] as? [[String: Any]]
            else { continue }
            for account in accounts {
                for detail in account["stream_detail"] as? [[String: Any]] ?? [] where detail["name"] as? String == stream {
                    guard let leader = (detail["cluster"] as? [String: Any])?["leader"] as? String, !leader.isEmpty else {
                        continue
                    }
                    var consumers: [String: String] = [:]
                    for consumer in detail["consumer_detail"] as? [[String: Any]] ?? [] {
                        if let name = consumer["name"] as? String,
                            let consumerLeader = (consumer["cluster"] as? [String: Any])?["leader"] as? String
                        {
                            consumers[name] = consumerLeader
                        }
                    }
                    return (leader, consumers)
                }
            }
        }
        return (nil, [:])
    }

    /// Asks the stream's leader to step down (`$JS.API.STREAM.LEADER.STEPDOWN.<stream>`) and waits until another
    /// node leads it: how a test puts the leader elsewhere than a given node. Returns the new leader.
    @discardableResult
    public func stepDownStreamLeader(_ stream: String, timeout: Duration = .seconds(20)) async throws -> String {
        guard let old = streamLeader(stream), let node = running.first else {
            throw LoopbackSocket.Failure(description: "stream \(stream) has no leader to step down")
        }
        _ = try Self.request("$JS.API.STREAM.LEADER.STEPDOWN.\(stream)", port: node.clientPort)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let leader = streamLeader(stream), leader != old { return leader }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LoopbackSocket.Failure(description: "stream \(stream) kept leader \(old) after a step-down")
    }

    /// Asks consumer `durable` of `stream` to step down until its leader is `node` (each step-down elects a random
    /// other replica); false when it did not get there in `attempts` tries.
    public func moveConsumerLeader(stream: String, durable: String, to node: String, attempts: Int = 30) async throws -> Bool {
        for _ in 0..<attempts {
            if leaders(stream).consumers[durable] == node { return true }
            guard let port = running.first?.clientPort else { return false }
            // The reply may be lost in the leader change it causes: the wait below is what counts.
            _ = try? Self.request("$JS.API.CONSUMER.LEADER.STEPDOWN.\(stream).\(durable)", port: port)
            let deadline = ContinuousClock.now + .seconds(20)
            try await Task.sleep(for: .milliseconds(200))
            while leaders(stream).consumers[durable] == nil && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        return leaders(stream).consumers[durable] == node
    }

    /// One NATS request in the plain text protocol (CONNECT, SUB, PUB with a reply subject, read the MSG), so that
    /// TestSupport needs no NATS client. For the JetStream API's small JSON requests; blocking, 5 s at most.
    public static func request(_ subject: String, payload: String = "", port: Int) throws -> String {
        let descriptor = try LoopbackSocket.connect(port: port, receiveTimeout: 5)
        defer { close(descriptor) }
        let body = Array(payload.utf8)
        try send(
            descriptor,
            Array("CONNECT {\"verbose\":false}\r\nSUB _TEST.reply 1\r\nPUB \(subject) _TEST.reply \(body.count)\r\n".utf8)
                + body + Array("\r\n".utf8))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            // MSG _TEST.reply 1 <bytes>\r\n<payload>\r\n (INFO and PING lines before it are skipped).
            if let header = received.firstRange(of: Array("MSG _TEST.reply 1 ".utf8)),
                let lineEnd = received[header.upperBound...].firstRange(of: Array("\r\n".utf8)),
                let count = Int(String(decoding: received[header.upperBound..<lineEnd.lowerBound], as: UTF8.self)),
                received.count >= lineEnd.upperBound + count
            {
                return String(decoding: received[lineEnd.upperBound..<lineEnd.upperBound + count], as: UTF8.self)
            }
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { throw LoopbackSocket.Failure(description: "no reply to \(subject) from port \(port)") }
            received += buffer[0..<count]
            if received.firstRange(of: Array("PING\r\n".utf8)) != nil {
                try send(descriptor, Array("PONG\r\n".utf8))
                received.removeSubrange(received.firstRange(of: Array("PING\r\n".utf8))!)
            }
        }
    }

    private static func send(_ descriptor: CInt, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let written = bytes[sent...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written > 0 else { throw LoopbackSocket.Failure(description: "write failed: errno \(errno)") }
            sent += written
        }
    }

    /// The replicas the stream has (its configuration's `num_replicas`), from the first node that hosts it.
    public func streamReplicas(_ stream: String) -> Int? {
        for node in running {
            guard let jsz = try? Self.monitor("/jsz?accounts=true&streams=true&config=true", port: node.monitorPort),
                let accounts = jsz["account_details"] as? [[String: Any]]
            else { continue }
            for account in accounts {
                for detail in account["stream_detail"] as? [[String: Any]] ?? [] where detail["name"] as? String == stream {
                    if let config = detail["config"] as? [String: Any], let replicas = config["num_replicas"] as? Int {
                        return replicas
                    }
                }
            }
        }
        return nil
    }

    /// The running nodes that have a client connection named `clientName` (libnats sends the name in CONNECT).
    public func nodes(servingClient clientName: String) -> [Node] {
        running.filter { node in
            guard let connz = try? Self.monitor("/connz", port: node.monitorPort),
                let connections = connz["connections"] as? [[String: Any]]
            else { return false }
            return connections.contains { $0["name"] as? String == clientName }
        }
    }

    /// GETs a monitoring endpoint (`/jsz`, `/connz`, ...) and decodes its JSON. A blocking loopback round trip of a
    /// few milliseconds, bounded by a 2 s receive timeout.
    public static func monitor(_ path: String, port: Int) throws -> [String: Any] {
        let descriptor = try LoopbackSocket.connect(port: port, receiveTimeout: 2)
        defer { close(descriptor) }
        // HTTP/1.0: the server closes after the response, so reading to EOF gives the whole body.
        try send(descriptor, Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8))
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw LoopbackSocket.Failure(description: "no HTTP response from monitor port \(port)\(path)")
        }
        let body = Data(response[split.upperBound...])
        guard let json = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw LoopbackSocket.Failure(description: "monitor port \(port)\(path) answered no JSON object")
        }
        return json
    }
}
