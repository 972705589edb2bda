import Foundation

/// What a comet publishes about itself in the cluster registry, so that logic (nodes API, online totals)
/// and job (gRPC clients) find it. It plays the part of goim's Discovery instance and metadata.
public struct CometInstance: Sendable, Codable, Equatable {
    /// The comet's server id (goim's hostname): the value stored in routing keys and `PushMsg.server`.
    public var hostname: String
    /// `host:port` of this comet's internal gRPC service (`goim.comet.Comet`).
    public var rpcAddress: String
    /// Public addresses for clients (goim's `-addrs`).
    public var addrs: [String]
    public var tcpPorts: [Int]
    public var wsPorts: [Int]
    public var wssPorts: [Int]
    public var region: String
    public var zone: String
    public var weight: Int
    public var offline: Bool
    public var connCount: Int
    public var ipCount: Int
    /// Pushes written to clients since the comet started (one per recipient), as of its last online report; nil from
    /// a comet that does not publish it. The admin page's delivery rate.
    public var delivered: Int?
    /// When this process started, Unix nanoseconds; a restarted comet gets a new value.
    public var startedAt: Int64
    /// When this record was last written, Unix nanoseconds (goim's `latest_timestamp`).
    public var updatedAt: Int64

    public init(
        hostname: String, rpcAddress: String, addrs: [String] = [], tcpPorts: [Int] = [], wsPorts: [Int] = [],
        wssPorts: [Int] = [], region: String = "", zone: String = "", weight: Int = 10, offline: Bool = false,
        connCount: Int = 0, ipCount: Int = 0, delivered: Int? = nil, startedAt: Int64 = CometInstance.now(),
        updatedAt: Int64 = CometInstance.now()
    ) {
        self.delivered = delivered
        self.hostname = hostname
        self.rpcAddress = rpcAddress
        self.addrs = addrs
        self.tcpPorts = tcpPorts
        self.wsPorts = wsPorts
        self.wssPorts = wssPorts
        self.region = region
        self.zone = zone
        self.weight = weight
        self.offline = offline
        self.connCount = connCount
        self.ipCount = ipCount
        self.startedAt = startedAt
        self.updatedAt = updatedAt
    }

    public static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }

    enum CodingKeys: String, CodingKey {
        case hostname, rpcAddress = "rpc_addr", addrs, tcpPorts = "tcp_ports", wsPorts = "ws_ports", wssPorts = "wss_ports"
        case region, zone, weight, offline, connCount = "conn_count", ipCount = "ip_count", delivered
        case startedAt = "started_at", updatedAt = "latest_timestamp"
    }
}
