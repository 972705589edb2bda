import Logging
import NIOCore
import NIOPosix

/// One TCP connection with `RedisChannelHandler` installed and AUTH/SELECT done. Many commands may be in flight
/// on it at once; it is shared by every caller the pool hands it to.
final class RedisConnection: Sendable {
    let channel: any Channel
    private let commandTimeout: TimeAmount

    private init(channel: any Channel, commandTimeout: TimeAmount) {
        self.channel = channel
        self.commandTimeout = commandTimeout
    }

    var isActive: Bool { channel.isActive }

    /// Connects, then authenticates and selects the database. Throws `RedisError.connectionFailed` or
    /// `.authenticationFailed`; never leaves a channel open on failure.
    static func connect(
        _ configuration: RedisConfiguration, on eventLoop: any EventLoop, logger: Logger
    ) async throws -> RedisConnection {
        let host = configuration.host
        let port = configuration.port
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(logger: logger))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            throw RedisError.connectionFailed(host: host, port: port, underlying: error)
        }
        let connection = RedisConnection(channel: channel, commandTimeout: TimeAmount(configuration.commandTimeout))
        do {
            try await connection.setUp(configuration)
        } catch {
            channel.close(promise: nil)
            if let error = error as? RedisError, case .authenticationFailed = error { throw error }
            throw RedisError.connectionFailed(host: host, port: port, underlying: error)
        }
        return connection
    }

    /// AUTH and SELECT, pipelined, before the pool lends the connection to anyone.
    private func setUp(_ configuration: RedisConfiguration) async throws {
        var commands: [RedisCommand] = []
        if let password = configuration.password {
            let user = configuration.username.map { [RedisArgument.string($0)] } ?? []
            commands.append(RedisCommand("AUTH", user + [.string(password)]))
        }
        if configuration.database != 0 {
            commands.append(RedisCommand("SELECT", [.integer(Int64(configuration.database))]))
        }
        guard !commands.isEmpty else { return }
        // Not cancellable: the connection may serve other callers, so a cancelled first caller must not break it.
        let replies = try await submit(commands).futureResult.get()
        for (command, reply) in zip(commands, replies) {
            guard case .error(let message) = reply else { continue }
            if command.name == "AUTH" {
                throw RedisError.authenticationFailed(
                    host: configuration.host, port: configuration.port, message: message)
            }
            throw RedisError.server(message: "SELECT \(configuration.database): \(message)")
        }
    }

    /// Sends `commands` in one write and returns their replies in order (error replies included as `.error`).
    func send(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        let replies = submit(commands)
        // A cancelled caller stops waiting; the reply is still read (and dropped) so the stream stays in step.
        return try await withTaskCancellationHandler {
            try await replies.futureResult.get()
        } onCancel: {
            replies.fail(CancellationError())
        }
    }

    private func submit(_ commands: [RedisCommand]) -> EventLoopPromise<[RESPValue]> {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        // If the handler is already gone (channel closed), nobody else would complete the promise.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in promise.fail(RedisError.connectionClosed) }
        let request = RedisRequest(commands: commands, promise: promise, timeout: commandTimeout)
        channel.writeAndFlush(request, promise: written)
        return promise
    }

    func close() -> EventLoopFuture<Void> {
        channel.close()
    }
}
