import GoIMConfig
import Logging
import NIOCore
import NIOSSL
import Primitives
import ServiceLifecycle

/// Reports this comet's room counts to Logic every `onlineInterval` (`RenewOnline`) and keeps the cluster-wide
/// counts it returns for heartbeat replies; retries after 1 s on error, as goim does.
struct OnlineReporter: Service {
    let comet: Comet
    let interval: Duration
    /// nil while logic answers; what failed otherwise (for `/ready`).
    let status = StatusFlag(initial: "no RenewOnline answer from logic yet")

    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                comet.counters.deliveredSnapshot.store(await comet.loopTotals().delivered, ordering: .relaxed)
                do {
                    let all = try await comet.logic.renewOnline(server: comet.server, roomCount: comet.rooms.counts())
                    comet.rooms.updateAllOnline(all)
                    status.set(nil)
                    try? await Task.sleep(for: interval)
                } catch {
                    if Task.isCancelled { return }
                    comet.counters.increment(\.logicErrors)
                    status.set("logic RenewOnline failed: \(error)")
                    comet.logger.warning("Logic RenewOnline failed; retrying in 1s", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }
}

/// Owns the client connections' lifetime: starts the per-loop timeout sweeps, and on graceful shutdown closes every
/// client (each authenticated one disconnected at Logic, a bounded number at a time) before Logic's client stops.
struct ConnectionsService: Service {
    let comet: Comet

    func run() async {
        comet.startSweeps()
        try? await gracefulShutdown()
        comet.logger.info("closing all client connections")
        await comet.closeAll()
        comet.stopSweeps()
        let stats = await comet.statistics()
        comet.logger.info("closed all client connections", metadata: [
            "goim.authenticated": "\(stats.authenticated)", "goim.delivered": "\(stats.delivered)",
            "goim.dropped": "\(stats.dropped)", "goim.offsetDuplicates": "\(stats.offsetDuplicates)",
            "goim.offsetsHeld": "\(stats.offsetsHeld)",
            "goim.offsetsSkipped": "\(stats.offsetsSkipped)", "goim.gapFills": "\(stats.gapFills)",
            "goim.recoveries": "\(stats.recoveries)", "goim.recoveriesIncomplete": "\(stats.recoveriesIncomplete)",
            "goim.recoveryFailures": "\(stats.recoveryFailures)",
        ])
    }
}

/// Binds the client listeners (TCP, WebSocket, WebSocket over TLS) and publishes their ports; closes them first on
/// graceful shutdown (stop accepting). Last in the comet's services, so it starts when everything it feeds exists.
final class ListenersService: Service {
    let comet: Comet
    let tls: NIOSSLContext?
    let addresses = OnceValue<[BoundListener]>()

    init(comet: Comet, tls: NIOSSLContext?) {
        self.comet = comet
        self.tls = tls
    }

    func run() async throws {
        let listeners: [BoundListener]
        do {
            listeners = try await Listeners.bind(comet: comet, tls: tls)
        } catch {
            addresses.fail(error)
            throw error
        }
        addresses.publish(listeners)
        try? await gracefulShutdown()
        for listener in listeners {
            try? await listener.channel.close()
        }
        comet.logger.info("stopped accepting connections")
    }
}

/// Runs `service` once `ready` returns (registration once every port is known).
struct AfterReady: Service {
    let service: any Service
    let ready: @Sendable () async throws -> Void

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await ready() }
        } catch {
            return  // shutting down, or a listener failed (its service reports that)
        }
        try await service.run()
    }
}

/// The ports the comet listens on, published once everything is bound.
public struct BoundAddresses: Sendable, Equatable {
    public var tcp: [Int]
    public var webSocket: [Int]
    public var webSocketTLS: [Int]
    /// The `goim.comet.Comet` gRPC port.
    public var rpc: Int
}
