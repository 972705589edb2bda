import GoIMConfig
import Redis

extension RedisConfiguration {
    /// The client settings of `[redis]`, as comet, logic and job all connect; `poolSize` overrides `redis.active`.
    public init(_ section: RedisSection, poolSize: Int? = nil) {
        self.init(
            host: section.addr.host, port: section.addr.port, password: section.auth.isEmpty ? nil : section.auth,
            database: section.db, poolSize: poolSize ?? section.active, connectTimeout: section.dialTimeout,
            commandTimeout: section.readTimeout, username: section.user.isEmpty ? nil : section.user,
            clusterNodes: section.cluster.map { RedisNodeAddress(host: $0.host, port: $0.port) },
            clusterRefreshInterval: section.clusterRefresh)
    }
}
