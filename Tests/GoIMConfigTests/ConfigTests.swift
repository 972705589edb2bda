import Foundation
import GoIMConfig
import Testing

@Suite struct GoDurationTests {
    @Test(arguments: [
        ("500ms", Duration.milliseconds(500)), ("8s", .seconds(8)), ("4m", .seconds(240)), ("2h", .seconds(7200)),
        ("1h30m", .seconds(5400)), ("1.5s", .milliseconds(1500)), ("0", .zero), ("250us", .microseconds(250)),
        ("10ns", .nanoseconds(10)),
    ])
    func parses(text: String, expected: Duration) {
        #expect(GoDuration.parse(text) == expected)
    }

    @Test(arguments: ["", "5", "s", "5x", "1h30", "--1s", "abc"])
    func rejects(text: String) {
        #expect(GoDuration.parse(text) == nil)
    }

    @Test func formats() {
        #expect(GoDuration.format(.seconds(240)) == "4m")
        #expect(GoDuration.format(.milliseconds(1500)) == "1500ms")
        #expect(Duration.seconds(480).nanoseconds == 480_000_000_000)
    }
}

@Suite struct HostPortTests {
    @Test func parsesGoimForms() {
        #expect(HostPort(":3101") == HostPort(host: "0.0.0.0", port: 3101))
        #expect(HostPort("127.0.0.1:6379") == HostPort(host: "127.0.0.1", port: 6379))
        #expect(HostPort("[::1]:3101") == HostPort(host: "::1", port: 3101))
        #expect(HostPort("nats://nats:4222") == HostPort(host: "nats", port: 4222))
        #expect(HostPort(":3119", defaultHost: "127.0.0.1") == HostPort(host: "127.0.0.1", port: 3119))
        #expect(HostPort("3111") == nil)  // goim's default without a colon is not an address
        #expect(HostPort("host:99999") == nil)
    }
}

@Suite struct CometConfigurationTests {
    @Test func defaultsAreGoims() throws {
        let (config, unknown) = try CometConfiguration.load(path: nil, environment: [:])
        #expect(config.tcp.bind == [HostPort(host: "0.0.0.0", port: 3101)])
        #expect(config.websocket.bind == [HostPort(host: "0.0.0.0", port: 3102)])
        #expect(config.websocket.tlsBind == [HostPort(host: "0.0.0.0", port: 3103)])
        #expect(config.rpcServer.addr.port == 3109)
        #expect(config.rpcClient.addrs == [HostPort(host: "127.0.0.1", port: 3119)])
        #expect(config.proto.maxBodySize == 4096)
        #expect(config.rpcClient.batchSize == 128)
        #expect(unknown.isEmpty)
    }

    @Test func sessionRefreshMustStayBelowTheRoutingTTL() throws {
        let (config, _) = try CometConfiguration.load(path: nil, environment: [:])
        #expect(config.proto.sessionRefreshMax < config.redis.expire)
        #expect {
            _ = try CometConfiguration(ConfigReader(toml: "[protocol]\nsessionRefreshMax = \"30m\"\n[redis]\nexpire = \"30m\"\n"))
        } throws: { error in
            (error as? ConfigError)?.description.contains("protocol.sessionRefreshMax") == true
        }
        #expect(throws: Never.self) {
            _ = try CometConfiguration(ConfigReader(toml: "[protocol]\nsessionRefreshMax = \"30m\"\n[redis]\nexpire = \"1h\"\n"))
        }
    }

    @Test func sessionRewriteSpreadIsReadAndABadOneNamed() throws {
        let (defaults, _) = try CometConfiguration.load(path: nil, environment: [:])
        #expect(defaults.proto.sessionRewriteSpread == .seconds(30))
        let (set, _) = try CometConfiguration.load(path: nil, environment: ["GOIM_PROTOCOL_SESSIONREWRITESPREAD": "1s"])
        #expect(set.proto.sessionRewriteSpread == .seconds(1))
        #expect {
            _ = try CometConfiguration(ConfigReader(toml: "[protocol]\nsessionRewriteSpread = \"soon\"\n"))
        } throws: { error in
            (error as? ConfigError)?.description.contains("protocol.sessionRewriteSpread") == true
        }
    }

    @Test func rpcClientBatchSize() throws {
        let (config, _) = try CometConfiguration.load(path: nil, environment: ["GOIM_RPCCLIENT_BATCHSIZE": "1"])
        #expect(config.rpcClient.batchSize == 1)
        for bad in ["0", "5000"] {
            #expect(throws: ConfigError.self) {
                _ = try CometConfiguration(ConfigReader(toml: "[rpcClient]\nbatchSize = \(bad)\n"))
            }
        }
    }

    @Test func readsGoimExampleFileWithCaseInsensitiveKeys() throws {
        let toml = """
            [tcp]
                bind = [":3101"]
                sndbuf = 4096
                rcvbuf = 4096
                keepalive = false
                reader = 32
                readBuf = 1024
                readBufSize = 8192
            [websocket]
                Bind = [":4102"]
                tlsOpen = false
            [protocol]
                HandshakeTimeout = "8s"
            [whitelist]
                Whitelist = [123]
                WhiteLog  = "/tmp/white_list.log"
            [bucket]
                size = 32
                routineAmount = 32
            [typo]
                x = 1
            """
        let reader = try ConfigReader(toml: toml, source: "comet.toml")
        let config = try CometConfiguration(reader)
        #expect(config.websocket.bind == [HostPort(host: "0.0.0.0", port: 4102)])
        #expect(config.proto.handshakeTimeout == .seconds(8))
        #expect(config.whitelist.whitelist == [123])
        #expect(config.whitelist.whiteLog == "/tmp/white_list.log")
        #expect(reader.unknownKeys == ["typo"])
    }

    @Test func environmentOverridesTheFile() throws {
        let reader = try ConfigReader(
            toml: "[tcp]\nbind = [\":3101\"]\n[env]\nhost = \"file\"\n",
            environment: ["GOIM_TCP_BIND": ":4101, 127.0.0.1:4201", "GOIM_ENV_HOST": "comet-7", "GOIM_TCP_KEEPALIVE": "true",
                          "GOIM_PROTOCOL_HANDSHAKETIMEOUT": "3s"])
        let config = try CometConfiguration(reader)
        #expect(config.tcp.bind == [HostPort(host: "0.0.0.0", port: 4101), HostPort(host: "127.0.0.1", port: 4201)])
        #expect(config.env.host == "comet-7")
        #expect(config.tcp.keepalive)
        #expect(config.proto.handshakeTimeout == .seconds(3))
        // A key set in the file and overridden by the environment was read, not unknown.
        #expect(reader.unknownKeys == [])
    }

    @Test func everyBadFieldIsNamed() throws {
        let toml = """
            [tcp]
            bind = "nonsense"
            sndbuf = "big"
            [protocol]
            handshakeTimeout = "soon"
            slowConsumerPolicy = "ignore"
            [websocket]
            tlsOpen = true
            """
        let reader = try ConfigReader(toml: toml, source: "comet.toml")
        do {
            _ = try CometConfiguration(reader)
            Issue.record("bad config accepted")
        } catch {
            let text = error.description
            #expect(text.contains("tcp.bind"))
            #expect(text.contains("tcp.sndbuf: expected an integer, found a string"))
            #expect(text.contains("protocol.handshakeTimeout"))
            #expect(text.contains("protocol.slowConsumerPolicy"))
            #expect(text.contains("websocket.certFile"))
        }
    }

    @Test func syntaxErrorsGiveLineAndColumn() {
        #expect {
            _ = try ConfigReader(toml: "[tcp\nbind = 1", source: "x.toml")
        } throws: { error in
            guard case .syntax(let path, let line, _, _) = error as? ConfigError else { return false }
            return path == "x.toml" && line == 1
        }
    }

    @Test func missingFileIsAClearError() {
        #expect {
            _ = try CometConfiguration.load(path: "/nonexistent/comet.toml", environment: [:])
        } throws: { error in
            (error as? ConfigError)?.description.contains("/nonexistent/comet.toml") == true
        }
    }
}

@Suite struct LogicAndJobConfigurationTests {
    @Test func logicDefaults() throws {
        let (config, _) = try LogicConfiguration.load(path: nil, environment: [:])
        #expect(config.httpServer.addr.port == 3111)
        #expect(config.rpcServer.addr.port == 3119)
        #expect(config.sessionHeartbeat == .seconds(480))
        #expect(config.redis.expire == .seconds(1800))
        #expect(config.nats.subject(for: "room") == "goim.push.room")
        #expect(config.backoff.jitter == 0.3)  // goim's code default 1.3 was a typo; its example says 0.3
    }

    @Test func logicRegionsAndJWTValidation() throws {
        let toml = """
            [regions]
            "bj" = ["北京","天津"]
            "sh" = ["上海"]
            [auth]
            mode = "jwt"
            """
        let reader = try ConfigReader(toml: toml)
        #expect {
            _ = try LogicConfiguration(reader)
        } throws: { error in
            (error as? ConfigError)?.description.contains("auth.jwtSecret") == true
        }
        let good = try LogicConfiguration(ConfigReader(toml: toml + "\njwtSecret = \"s\"\n"))
        #expect(good.regions["bj"] == ["北京", "天津"])
        #expect(good.auth.mode == "jwt")
    }

    @Test func allowKeyTakeoverIsABoolean() throws {
        #expect(try LogicConfiguration(ConfigReader(toml: "")).auth.allowKeyTakeover == false)
        #expect(try LogicConfiguration(ConfigReader(toml: "[auth]\nallowKeyTakeover = true\n")).auth.allowKeyTakeover)
        #expect {
            _ = try LogicConfiguration(ConfigReader(toml: "[auth]\nallowKeyTakeover = \"yes please\"\n"))
        } throws: { error in
            (error as? ConfigError)?.description.contains("auth.allowKeyTakeover") == true
        }
    }

    @Test func userHistory() throws {
        #expect(try JobConfiguration(ConfigReader(toml: "")).history.mids == nil)
        #expect(try JobConfiguration(ConfigReader(toml: "[history]\nmids = \"\"\n")).history.mids == nil)
        let job = try JobConfiguration(ConfigReader(toml: "[history]\nmids = \"100:24h\"\n"))
        #expect(job.history.mids == HistoryLimits(size: 100, ttl: .seconds(86_400)))
        let (logic, _) = try LogicConfiguration.load(path: nil, environment: ["GOIM_HISTORY_MIDS": "5:30s"])
        #expect(logic.history.mids == HistoryLimits(size: 5, ttl: .seconds(30)))
        for (bad, reason) in [("100", "size:ttl"), ("0:1h", "size"), ("x:1h", "size"), ("10:500ms", "ttl"), ("1:2:3", "size:ttl")] {
            do {
                _ = try JobConfiguration(ConfigReader(toml: "[history]\nmids = \"\(bad)\"\n"))
                Issue.record("\(bad) was accepted")
            } catch {
                #expect(error.description.contains("history.mids") && error.description.contains(reason), "\(error)")
            }
        }
    }

    @Test func historyRoomTypes() throws {
        #expect(try JobConfiguration(ConfigReader(toml: "")).history.rooms.isEmpty)
        let job = try JobConfiguration(ConfigReader(toml: "[history]\nrooms = [\"live:100:10m\", \"Chat:5:1h\"]\n"))
        #expect(job.history.rooms == ["live": HistoryLimits(size: 100, ttl: .seconds(600)), "chat": HistoryLimits(size: 5, ttl: .seconds(3600))])
        #expect(job.history.limits(forRoom: "live://1000") == HistoryLimits(size: 100, ttl: .seconds(600)))
        #expect(job.history.limits(forRoom: "CHAT://x") == HistoryLimits(size: 5, ttl: .seconds(3600)))
        #expect(job.history.limits(forRoom: "other://1") == nil && job.history.limits(forRoom: "live") == nil)
        let (logic, _) = try LogicConfiguration.load(path: nil, environment: ["GOIM_HISTORY_ROOMS": "live:10:30s"])
        #expect(logic.history.rooms == ["live": HistoryLimits(size: 10, ttl: .seconds(30))])
        for (bad, reason) in [
            ("live:100", "type:size:ttl"), ("live:0:1m", "size"), ("live:x:1m", "size"), ("live:10:forever", "ttl"),
            ("live:10:500ms", "ttl"), ("a/b:1:1m", "type:size:ttl"), (":1:1m", "type:size:ttl"),
        ] {
            #expect(throws: ConfigError.self, "\(bad)") {
                _ = try JobConfiguration(ConfigReader(toml: "[history]\nrooms = [\"\(bad)\"]\n"))
            }
            do {
                _ = try JobConfiguration(ConfigReader(toml: "[history]\nrooms = [\"\(bad)\"]\n"))
            } catch {
                #expect(error.description.contains("history.rooms") && error.description.contains(reason), "\(error)")
            }
        }
        #expect(throws: ConfigError.self) {
            _ = try JobConfiguration(ConfigReader(toml: "[history]\nrooms = [\"live:1:1m\", \"live:2:1m\"]\n"))
        }
        let comet = try CometConfiguration(ConfigReader(toml: "[history]\ngapWait = \"250ms\"\nrecoverLimit = 50\n"))
        #expect(comet.history.gapWait == .milliseconds(250) && comet.history.recoverLimit == 50 && comet.history.maxHeld == 10_000)
    }

    @Test func logicCORSOrigins() throws {
        let (defaults, _) = try LogicConfiguration.load(path: nil, environment: [:])
        #expect(defaults.httpServer.corsOrigins == [])
        let (config, _) = try LogicConfiguration.load(
            path: nil, environment: ["GOIM_HTTPSERVER_CORSORIGINS": "http://127.0.0.1:1999, https://chat.example.org"])
        #expect(config.httpServer.corsOrigins == ["http://127.0.0.1:1999", "https://chat.example.org"])
        #expect(try LogicConfiguration(ConfigReader(toml: "[httpServer]\ncorsOrigins = [\"*\"]\n")).httpServer.corsOrigins == ["*"])
        for bad in ["127.0.0.1:1999", "http://host/path", "http://", "http://host:1999/"] {
            #expect {
                _ = try LogicConfiguration(ConfigReader(toml: "[httpServer]\ncorsOrigins = [\"\(bad)\"]\n"))
            } throws: { error in
                (error as? ConfigError)?.description.contains("httpServer.corsOrigins") == true
            }
        }
    }

    @Test func redisExpireZeroIsRefused() throws {
        // goim deleted every session at once with expire = 0 (bug 30).
        #expect(throws: ConfigError.self) {
            _ = try LogicConfiguration(ConfigReader(toml: "[redis]\nexpire = \"0s\"\n"))
        }
    }

    @Test func redisClusterNodes() throws {
        #expect(try LogicConfiguration(ConfigReader(toml: "")).redis.cluster.isEmpty)
        let config = try LogicConfiguration(ConfigReader(toml: "[redis]\ncluster = [\"10.0.0.1:7000\", \":7001\"]\nclusterRefresh = \"2s\"\n"))
        #expect(config.redis.cluster == [HostPort(host: "10.0.0.1", port: 7000), HostPort(host: "127.0.0.1", port: 7001)])
        #expect(config.redis.clusterRefresh == .seconds(2))
        let (fromEnvironment, _) = try JobConfiguration.load(
            path: nil, environment: ["GOIM_REDIS_CLUSTER": "redis-1:6379,redis-2:6379"])
        #expect(fromEnvironment.redis.cluster.map(\.description) == ["redis-1:6379", "redis-2:6379"])
        #expect {
            _ = try LogicConfiguration(ConfigReader(toml: "[redis]\ncluster = [\"10.0.0.1:7000\"]\ndb = 2\n"))
        } throws: { error in
            (error as? ConfigError)?.description.contains("redis.db") == true
        }
    }

    @Test func jobDefaultsAndValidation() throws {
        let (config, _) = try JobConfiguration.load(path: nil, environment: [:])
        #expect(config.room.batch == 20)
        #expect(config.room.signal == .seconds(1))
        #expect(config.consumer.durable == "goim-job")
        #expect(throws: ConfigError.self) {
            _ = try JobConfiguration(ConfigReader(toml: "[room]\nbatch = 0\n"))
        }
    }

    @Test func shippedConfigFilesLoad() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let configs = root.appendingPathComponent("configs")
        for name in ["comet", "logic", "job"] {
            let path = configs.appendingPathComponent("\(name).toml").path
            guard FileManager.default.fileExists(atPath: path) else { continue }
            let reader = try ConfigReader(path: path, environment: [:])
            switch name {
            case "comet": _ = try CometConfiguration(reader)
            case "logic": _ = try LogicConfiguration(reader)
            default: _ = try JobConfiguration(reader)
            }
            #expect(reader.unknownKeys == [], "\(name).toml has keys no field reads")
        }
    }
}

/// Secure defaults: nothing that writes (push, routing) listens beyond loopback without a credential, unless the
/// operator asked for goim's behaviour by name.
@Suite struct SecureDefaultsTests {
    static func refusal(_ make: () throws -> Void) -> String? {
        do {
            try make()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func internalPortsDefaultToLoopback() throws {
        #expect(try CometConfiguration.load(path: nil, environment: [:]).0.rpcServer.addr == HostPort(host: "127.0.0.1", port: 3109))
        let (logic, _) = try LogicConfiguration.load(path: nil, environment: [:])
        #expect(logic.rpcServer.addr == HostPort(host: "127.0.0.1", port: 3119))
        #expect(logic.httpServer.addr == HostPort(host: "127.0.0.1", port: 3111))
    }

    @Test func monitorPorts() throws {
        #expect(try CometConfiguration.load(path: nil, environment: [:]).0.monitor.addr == HostPort(host: "0.0.0.0", port: 3108))
        #expect(try JobConfiguration.load(path: nil, environment: [:]).0.monitor.addr == HostPort(host: "0.0.0.0", port: 3128))
        #expect(try CometConfiguration.load(path: nil, environment: ["GOIM_MONITOR_ADDR": ""]).0.monitor.addr == nil)
        #expect(
            try JobConfiguration.load(path: nil, environment: ["GOIM_MONITOR_ADDR": "127.0.0.1:9000"]).0.monitor.addr
                == HostPort(host: "127.0.0.1", port: 9000))
        #expect(throws: ConfigError.self) { try CometConfiguration.load(path: nil, environment: ["GOIM_MONITOR_ADDR": "nope:x"]) }
        #expect(CometConfiguration().monitor.addr == nil)  // built in code (embedding, tests): off
    }

    @Test(arguments: ["comet", "logic"])
    func gRPCBeyondLoopbackNeedsTheSecret(service: String) throws {
        func load(_ environment: [String: String]) throws {
            let reader = try ConfigReader(toml: "", environment: environment)
            if service == "comet" { _ = try CometConfiguration(reader) } else { _ = try LogicConfiguration(reader) }
        }
        let exposed = ["GOIM_RPCSERVER_ADDR": ":3109"]
        let text = try #require(Self.refusal { try load(exposed) })
        #expect(text.contains("rpcAuth.secret"))
        #expect(text.contains("allowUnauthenticated"))
        #expect(Self.refusal { try load(exposed.merging(["GOIM_RPCAUTH_SECRET": "s3cret"]) { $1 }) } == nil)
        #expect(Self.refusal { try load(exposed.merging(["GOIM_RPCAUTH_ALLOWUNAUTHENTICATED": "true"]) { $1 }) } == nil)
        for loopback in ["127.0.0.1:3109", "[::1]:3109", "localhost:3109", "127.0.0.2:3109"] {
            #expect(Self.refusal { try load(["GOIM_RPCSERVER_ADDR": loopback]) } == nil, "\(loopback)")
        }
    }

    @Test func pushAPIBeyondLoopbackNeedsAToken() throws {
        func load(_ environment: [String: String]) throws {
            _ = try LogicConfiguration(ConfigReader(toml: "", environment: environment))
        }
        let exposed = ["GOIM_HTTPSERVER_ADDR": "0.0.0.0:3111"]
        let text = try #require(Self.refusal { try load(exposed) })
        #expect(text.contains("httpServer.pushToken"))
        #expect(text.contains("allowUnauthenticatedPush"))
        #expect(Self.refusal { try load(exposed.merging(["GOIM_HTTPSERVER_PUSHTOKEN": "t"]) { $1 }) } == nil)
        #expect(Self.refusal { try load(exposed.merging(["GOIM_HTTPSERVER_ALLOWUNAUTHENTICATEDPUSH": "true"]) { $1 }) } == nil)
        #expect(Self.refusal { try load(["GOIM_HTTPSERVER_ADDR": "127.0.0.1:3111"]) } == nil)
    }

    @Test func natsReplicasAndPublishTimeoutComeFromTheFileOrTheEnvironmentAndAreChecked() throws {
        let defaults = try LogicConfiguration(ConfigReader(toml: "", environment: [:]))
        #expect(defaults.nats.replicas == 1)
        #expect(defaults.nats.publishTimeout == .seconds(5))
        let file = try LogicConfiguration(ConfigReader(toml: "[nats]\nreplicas = 3\npublishTimeout = \"10s\"\n", environment: [:]))
        #expect(file.nats.replicas == 3)
        #expect(file.nats.publishTimeout == .seconds(10))
        let environment = try JobConfiguration(
            ConfigReader(toml: "[nats]\nreplicas = 1\n", environment: ["GOIM_NATS_REPLICAS": "3", "GOIM_NATS_PUBLISHTIMEOUT": "2s"]))
        #expect(environment.nats.replicas == 3)
        #expect(environment.nats.publishTimeout == .seconds(2))
        for bad in ["replicas = 0", "replicas = 7", "publishTimeout = \"10ms\""] {
            let text = Self.refusal { _ = try LogicConfiguration(ConfigReader(toml: "[nats]\n\(bad)\n", environment: [:])) }
            let key = String(bad.prefix { $0 != " " })
            #expect(text?.contains(key) == true, "\(bad): \(text ?? "accepted")")
        }
    }
}
