import GoIMConfig
import Logging
import Primitives
import ServiceLifecycle

/// Keeps one comet registered while it runs: writes its record at once, refreshes it every `refresh`
/// (with fresh connection counts from `snapshot`), and removes it on graceful shutdown so logic and job
/// stop using it immediately rather than after the TTL. Before its first write it refuses to take over a live record
/// of another comet with the same host name (another gRPC address): the service fails and the comet stops. A record
/// with the same address is this comet's own from before a restart.
///
/// A refresh that finds the record gone (Redis lost its data, or the record expired while refreshes failed) calls
/// `recordLost`: the comet's sessions in Redis are likely gone too, and the comet writes them again.
public struct RegistrationService: Service {
    let registry: CometRegistry
    let refresh: Duration
    let snapshot: @Sendable () -> CometInstance
    let recordLost: @Sendable () -> Void
    let logger: Logger
    /// nil once the record is written and while refreshes succeed; what failed otherwise (for `/ready`).
    public let status = StatusFlag(initial: "not registered yet")

    public init(
        registry: CometRegistry, refresh: Duration, logger: Logger, recordLost: @escaping @Sendable () -> Void = {},
        snapshot: @escaping @Sendable () -> CometInstance
    ) {
        self.registry = registry
        self.refresh = refresh
        self.snapshot = snapshot
        self.recordLost = recordLost
        self.logger = logger
    }

    public func run() async throws {
        // A duplicate host name ends the service here, before the deregistration below: the record is the other comet's.
        try await cancelWhenGracefulShutdown {
            var registered = false
            while !Task.isCancelled {
                let instance = snapshot()
                do {
                    if !registered, let other = try await registry.instance(hostname: instance.hostname),
                        other.rpcAddress != instance.rpcAddress
                    {
                        throw RegistryError.duplicateHostname(instance.hostname, otherRPCAddress: other.rpcAddress)
                    }
                    let existed = try await registry.register(instance)
                    status.set(nil)
                    if registered && !existed {
                        logger.warning(
                            "this comet's registry record was gone (Redis lost its data, or the record expired): its sessions are written again",
                            metadata: ["goim.server": "\(instance.hostname)"])
                        recordLost()
                    }
                    if !registered {
                        logger.info("registered in the cluster registry", metadata: ["goim.server": "\(instance.hostname)"])
                        registered = true
                    }
                } catch let error as RegistryError {
                    if case .duplicateHostname = error {
                        status.set("\(error)")
                        throw error
                    }
                    status.set("registry refresh failed: \(error)")
                    logger.warning("cluster registry refresh failed; retrying", metadata: ["error": "\(error)"])
                } catch {
                    status.set("registry refresh failed: \(error)")
                    logger.warning("cluster registry refresh failed; retrying", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: registered ? refresh : .seconds(1))
            }
        }
        let hostname = snapshot().hostname
        do {
            try await registry.deregister(hostname: hostname)
            logger.info("deregistered from the cluster registry", metadata: ["goim.server": "\(hostname)"])
        } catch {
            logger.warning("could not deregister; the record expires by its TTL", metadata: ["error": "\(error)"])
        }
    }
}
