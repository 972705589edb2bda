import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

/// How every swift-goim executable runs: the services its library lists, in one `ServiceGroup`, in start order
/// (clients first, listeners last, so graceful shutdown stops accepting first and closes clients last), until
/// SIGTERM or SIGINT.
public enum ServiceProcess {
    public static func run(
        _ services: [any Service], logger: Logger, maximumShutdown: Duration,
        signals: [UnixSignal] = [.sigterm, .sigint]
    ) async throws {
        try await ServiceGroup(configuration: configuration(services, logger: logger, maximumShutdown: maximumShutdown, signals: signals)).run()
    }

    /// The group configuration `run` uses, for callers (tests) that keep the group to trigger its shutdown.
    public static func configuration(
        _ services: [any Service], logger: Logger, maximumShutdown: Duration, signals: [UnixSignal] = []
    ) -> ServiceGroupConfiguration {
        // A service that fails shuts the others down in order (listeners first, shared resources last), then the
        // group throws its error.
        var configuration = ServiceGroupConfiguration(
            services: services.map { .init(service: $0, failureTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: signals, logger: logger)
        configuration.maximumGracefulShutdownDuration = maximumShutdown
        return configuration
    }
}

/// Shuts an event-loop group down once every service after it in the group has stopped: put it first.
public struct EventLoopGroupShutdown: Service {
    let group: any EventLoopGroup
    let then: @Sendable () -> Void

    /// - Parameter then: runs after the group is shut down (release what the services shared).
    public init(_ group: any EventLoopGroup, then: @escaping @Sendable () -> Void = {}) {
        self.group = group
        self.then = then
    }

    public func run() async throws {
        try? await gracefulShutdown()
        try? await group.shutdownGracefully()
        then()
    }
}
