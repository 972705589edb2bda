import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle

/// What the three executables do alike: report a bad configuration or a failed start on stderr with exit code 1,
/// and run the services in one `ServiceGroup` until SIGTERM/SIGINT.
public enum CommandSupport {
    /// Loads a configuration; on error prints "NAME: invalid configuration:" and the error, and exits with 1.
    public static func load<Configuration>(
        _ name: String, _ load: () throws -> (Configuration, unknownKeys: [String])
    ) throws -> (Configuration, unknownKeys: [String]) {
        do {
            return try load()
        } catch {
            FileHandle.standardError.write(Data("\(name): invalid configuration:\n\(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Builds the process's services; on error prints "NAME: cannot start:" and the error, and exits with 1.
    public static func build<Server>(_ name: String, _ build: () async throws -> Server) async throws -> Server {
        do {
            return try await build()
        } catch {
            FileHandle.standardError.write(Data("\(name): cannot start: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Runs `services` until SIGTERM or SIGINT; a service's failure is logged and exits with 1.
    public static func run(_ name: String, _ services: [any Service], logger: Logger, shutdownTimeout: Int) async throws {
        do {
            try await ServiceProcess.run(services, logger: logger, maximumShutdown: .seconds(max(1, shutdownTimeout)))
        } catch {
            logger.error("\(name) stopped with an error", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        logger.info("\(name) stopped")
    }
}
