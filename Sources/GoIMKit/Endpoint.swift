/// Where a comet listens, as a URL: `tcp://host:3101`, `ws://host:3102/sub`, `wss://host:3103/sub`.
public struct GoIMEndpoint: Sendable, Hashable, CustomStringConvertible {
    public enum Scheme: String, Sendable {
        case tcp, ws, wss
    }

    public var scheme: Scheme
    public var host: String
    public var port: Int
    /// The WebSocket upgrade path (goim's `/sub`); unused for TCP.
    public var path: String

    public init(scheme: Scheme, host: String, port: Int, path: String = "/sub") {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
    }

    /// Parses `scheme://host[:port][/path]`; the port defaults to goim's (3101, 3102, 3103), the path to `/sub`.
    public init(_ url: String) throws(GoIMKitError) {
        guard let separator = url.range(of: "://"), let scheme = Scheme(rawValue: url[..<separator.lowerBound].lowercased()) else {
            throw .badEndpoint(url, "expected tcp://, ws:// or wss://")
        }
        var rest = url[separator.upperBound...]
        var path = "/sub"
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[slash...])
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port: Int
        switch scheme {
        case .tcp: port = 3101
        case .ws: port = 3102
        case .wss: port = 3103
        }
        if host.hasPrefix("[") {  // [v6]:port
            guard let close = host.firstIndex(of: "]") else { throw .badEndpoint(url, "unclosed [ in the host") }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let parsed = Int(after.dropFirst()), (1...65535).contains(parsed) else { throw .badEndpoint(url, "bad port") }
                port = parsed
            }
            host = String(host[host.index(after: host.startIndex)..<close])
        } else if let colon = host.lastIndex(of: ":") {
            guard let parsed = Int(host[host.index(after: colon)...]), (1...65535).contains(parsed) else {
                throw .badEndpoint(url, "bad port")
            }
            port = parsed
            host = String(host[..<colon])
        }
        guard !host.isEmpty else { throw .badEndpoint(url, "no host") }
        self.init(scheme: scheme, host: host, port: port, path: path)
    }

    public var description: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return scheme == .tcp ? "tcp://\(host):\(port)" : "\(scheme.rawValue)://\(host):\(port)\(path)"
    }
}

/// What goes wrong in GoIMKit, in words an app developer can act on.
public enum GoIMKitError: Error, Equatable, CustomStringConvertible {
    case badEndpoint(String, String)
    case noEndpoints
    case missedHeartbeat
    case connectionClosed
    case closed
    case authRefused(String)

    public var description: String {
        switch self {
        case .badEndpoint(let url, let reason): "bad comet URL \"\(url)\": \(reason)"
        case .noEndpoints: "no comet URL given"
        case .missedHeartbeat: "missed heartbeat reply"
        case .connectionClosed: "connection closed by the server"
        case .closed: "closed by the application"
        case .authRefused(let reason): "authentication refused: \(reason)"
        }
    }
}

/// Exponential backoff with full jitter: a delay drawn uniformly in [0, min(max, base · 2^attempt)), so that clients
/// that lost the same comet come back spread over the window instead of all at once.
public struct Backoff: Sendable, Equatable {
    public var base: Duration
    public var max: Duration

    public init(base: Duration = .milliseconds(500), max: Duration = .seconds(15)) {
        self.base = base
        self.max = max
    }

    /// The delay before reconnect attempt `attempt` (0 = the first after a loss); `random` in [0, 1).
    public func delay(attempt: Int, random: Double = Double.random(in: 0..<1)) -> Duration {
        let ceiling = min(max, base * Double(1 << Swift.min(attempt, 30)))
        return ceiling * random
    }
}
