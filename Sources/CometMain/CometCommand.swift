import ArgumentParser
import Comet
import Foundation
import GoIMConfig
import Logging
import Metrics
import ServiceRuntime
import Telemetry

/// `comet --config configs/comet.toml`: loads the configuration (file, then `GOIM_*` environment overrides) and
/// runs the comet until SIGTERM or SIGINT, then shuts it down gracefully.
@main
struct CometCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comet",
        abstract: "The goim connection server: TCP, WebSocket and WebSocket-over-TLS clients, rooms and pushes.")

    @Option(
        name: [.customLong("config"), .customLong("conf", withSingleDash: true)],
        help: "Path of the TOML configuration file (goim's -conf is accepted too). Without it, defaults and GOIM_* environment variables apply.")
    var config: String?

    @Option(help: "Longest graceful shutdown (seconds) before the remaining work is cancelled.")
    var shutdownTimeout: Int = 30

    func run() async throws {
        let (configuration, unknownKeys) = try CommandSupport.load("comet") {
            try CometConfiguration.load(path: config, environment: ProcessInfo.processInfo.environment)
        }
        let logger = configuration.log.bootstrap(label: "goim.comet", unknownKeys: unknownKeys)
        logger.info("starting comet", metadata: ["goim.server": "\(configuration.env.host)", "config": "\(config ?? "<defaults>")"])
        let comet = try await CommandSupport.build("comet") { try await CometServer(configuration: configuration, logger: logger) }
        // Libraries that report through swift-metrics land on the same /metrics.
        MetricsSystem.bootstrap(comet.telemetry.factory)
        try await CommandSupport.run("comet", comet.services, logger: logger, shutdownTimeout: shutdownTimeout)
    }
}
