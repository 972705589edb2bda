import ArgumentParser
import Comet
import Foundation
import GoIMConfig
import Logging
import ServiceLifecycle

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

    @Option(help: "Longest graceful shutdown before the remaining work is cancelled.")
    var shutdownTimeout: Int = 30

    func run() async throws {
        let configuration: CometConfiguration
        let unknownKeys: [String]
        do {
            (configuration, unknownKeys) = try CometConfiguration.load(path: config, environment: ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("comet: invalid configuration:\n\(error)\n".utf8))
            throw ExitCode(1)
        }

        let logger = configuration.log.bootstrap(label: "goim.comet", unknownKeys: unknownKeys)
        logger.info("starting comet", metadata: ["goim.server": "\(configuration.env.host)", "config": "\(config ?? "<defaults>")"])

        let comet: CometService
        do {
            comet = try CometService(configuration: configuration, logger: logger)
        } catch {
            FileHandle.standardError.write(Data("comet: cannot start: \(error)\n".utf8))
            throw ExitCode(1)
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: [comet], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(shutdownTimeout)
        do {
            try await ServiceGroup(configuration: groupConfiguration).run()
        } catch {
            logger.error("comet stopped with an error", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        logger.info("comet stopped")
    }
}
