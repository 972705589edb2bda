import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Reports this comet's room counts to Logic every `onlineInterval` (`RenewOnline`, gzip) and keeps the
/// cluster-wide counts it returns for heartbeat replies; retries after 1 s on error, as goim does.
struct OnlineReporter: Service {
    let comet: Comet
    let interval: Duration

    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let all = try await comet.logic.renewOnline(server: comet.server, roomCount: comet.rooms.counts())
                    comet.rooms.updateAllOnline(all)
                    try? await Task.sleep(for: interval)
                } catch {
                    if Task.isCancelled { return }
                    comet.counters.increment(\.logicErrors)
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
    }
}

/// Runs the comet's gRPC server and publishes its address; stops it gracefully (in-flight calls finish).
struct GRPCServerService: Service {
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let onListening: @Sendable (Int) -> Void

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                if let address = try await server.listeningAddress {
                    onListening(address.ipv4?.port ?? address.ipv6?.port ?? 0)
                }
            }
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// Holds the bound client listeners; closes them first on graceful shutdown (stop accepting).
struct ListenersService: Service {
    let listeners: [BoundListener]
    let logger: Logger

    func run() async {
        try? await gracefulShutdown()
        for listener in listeners {
            try? await listener.channel.close()
        }
        logger.info("stopped accepting connections")
    }
}

/// Runs `service` once `ready` returns (e.g. registration once every port is known).
struct AfterReady: Service {
    let ready: @Sendable () async throws -> Void
    let service: any Service

    func run() async throws {
        try await ready()
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

/// A value published once, awaited by many.
final class Board<Value: Sendable>: Sendable {
    private struct State {
        var result: Result<Value, any Error>?
        var waiters: [CheckedContinuation<Value, any Error>] = []
    }

    private let state = Mutex(State())

    var current: Value? {
        state.withLock { state in
            if case .success(let value) = state.result { return value }
            return nil
        }
    }

    /// The first result wins; later ones are ignored.
    func publish(_ result: Result<Value, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    func value() async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let result = state.withLock { state -> Result<Value, any Error>? in
                if let result = state.result { return result }
                state.waiters.append(continuation)
                return nil
            }
            if let result { continuation.resume(with: result) }
        }
    }
}
