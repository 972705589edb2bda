import ArgumentParser
import Foundation
import GoIMConfig
import Job
import Logging
import Metrics
import ServiceRuntime
import Telemetry

/// `job --config configs/job.toml`: loads the configuration (file, then `GOIM_*` environment overrides) and
/// runs the job until SIGTERM or SIGINT, then shuts it down gracefully (messages in flight are delivered and
/// acknowledged, or handed back to the queue).
@main
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "The goim push worker: consumes pushes from NATS JetStream and delivers them to the comets.")

    @Option(
        name: [.customLong("config"), .customLong("conf", withSingleDash: true)],
        help: "Path of the TOML configuration file (goim's -conf is accepted too). Without it, defaults and GOIM_* environment variables apply.")
    var config: String?

    @Option(help: "Longest graceful shutdown (seconds) before the remaining work is cancelled.")
    var shutdownTimeout: Int = 60

    func run() async throws {
        let (configuration, unknownKeys) = try CommandSupport.load("job") {
            try JobConfiguration.load(path: config, environment: ProcessInfo.processInfo.environment)
        }
        let logger = configuration.log.bootstrap(label: "goim.job", unknownKeys: unknownKeys)
        logger.info("starting job", metadata: ["goim.host": "\(configuration.env.host)", "config": "\(config ?? "<defaults>")"])
        let job = try await CommandSupport.build("job") { try await JobWorker(configuration: configuration, logger: logger) }
        // Libraries that report through swift-metrics land on the same /metrics.
        MetricsSystem.bootstrap(job.telemetry.factory)
        try await CommandSupport.run("job", job.services, logger: logger, shutdownTimeout: shutdownTimeout)
        logger.info("job statistics", metadata: ["goim.stats": "\(job.statistics.snapshot)"])
    }
}
