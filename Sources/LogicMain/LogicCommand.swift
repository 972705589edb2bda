import ArgumentParser
import Foundation
import GoIMConfig
import Logging
import Metrics
import Logic
import ServiceRuntime
import Telemetry

/// `logic --config configs/logic.toml`: loads and validates the configuration, then runs Logic until
/// SIGTERM/SIGINT.
@main
struct LogicCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logic",
        abstract: "swift-goim logic: auth, session routing, goim's push HTTP API, online counts, node list.")

    @Option(
        name: [.customLong("config"), .customLong("conf", withSingleDash: true)],
        help: "TOML configuration file (goim's -conf is accepted too). Without it every field takes its default.")
    var config: String?

    // goim's Makefile flags (`-region=sh -zone=sh001 -deploy.env=dev -weight=10 -host=...`): accepted so its
    // run lines work; they override `[env]`.
    @Option(name: .customLong("region", withSingleDash: true), help: "Overrides env.region (goim's -region).")
    var region: String?
    @Option(name: .customLong("zone", withSingleDash: true), help: "Overrides env.zone (goim's -zone).")
    var zone: String?
    @Option(name: .customLong("deploy.env", withSingleDash: true), help: "Overrides env.deployEnv (goim's -deploy.env).")
    var deployEnv: String?
    @Option(name: .customLong("host", withSingleDash: true), help: "Overrides env.host (goim's -host).")
    var host: String?
    @Option(name: .customLong("weight", withSingleDash: true), help: "Overrides env.weight (goim's -weight).")
    var weight: Int?

    @Option(help: "Longest graceful shutdown (seconds) before the remaining work is cancelled.")
    var shutdownTimeout: Int = 15

    func run() async throws {
        var (configuration, unknownKeys) = try CommandSupport.load("logic") {
            try LogicConfiguration.load(path: config, environment: ProcessInfo.processInfo.environment)
        }
        if let region { configuration.env.region = region }
        if let zone { configuration.env.zone = zone }
        if let deployEnv { configuration.env.deployEnv = deployEnv }
        if let host, !host.isEmpty { configuration.env.host = host }
        if let weight { configuration.env.weight = weight }
        let logger = configuration.log.bootstrap(label: "goim.logic", unknownKeys: unknownKeys)
        logger.info(
            "starting logic",
            metadata: [
                "goim.http": "\(configuration.httpServer.addr)", "goim.rpc": "\(configuration.rpcServer.addr)",
                "goim.redis": "\(configuration.redis.addr)", "goim.nats": "\(configuration.nats.urls.joined(separator: ","))",
                "goim.auth": "\(configuration.auth.mode)",
            ])
        let logic = try await CommandSupport.build("logic") { try await LogicServer(configuration: configuration, logger: logger) }
        // Libraries that report through swift-metrics land on the same /metrics.
        MetricsSystem.bootstrap(logic.telemetry.factory)
        try await CommandSupport.run("logic", logic.services, logger: logger, shutdownTimeout: shutdownTimeout)
    }
}
