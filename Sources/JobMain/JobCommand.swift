import ArgumentParser
import Foundation
import GoIMConfig
import Job
import Logging

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
        let configuration: JobConfiguration
        let unknownKeys: [String]
        do {
            (configuration, unknownKeys) = try JobConfiguration.load(path: config, environment: ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("job: invalid configuration:\n\(error)\n".utf8))
            throw ExitCode(2)
        }

        let logger = configuration.log.bootstrap(label: "goim.job", unknownKeys: unknownKeys)
        logger.info("starting job", metadata: ["goim.host": "\(configuration.env.host)", "config": "\(config ?? "<defaults>")"])

        // NATS must be reachable to start; keep trying (SIGTERM/SIGINT still end the process here).
        var job: Job?
        var attempt = 0
        while job == nil {
            do {
                job = try await Job.make(configuration: configuration, logger: logger)
            } catch {
                attempt += 1
                if attempt == 1 || attempt.isMultiple(of: 30) {
                    logger.error("cannot connect to NATS; retrying every second", metadata: [
                        "goim.nats": "\(configuration.nats.urls)", "error": "\(error)",
                    ])
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
        try await job!.run(maximumShutdown: .seconds(max(1, shutdownTimeout)), logger: logger)
        logger.info("job stopped", metadata: ["goim.stats": "\(job!.statistics.snapshot)"])
    }
}
