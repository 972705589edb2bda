import NATS
import Synchronization
import TestSupport

/// Starts a nats-server with JetStream, connects, runs `body`, and always closes and stops.
func withNATS<T>(
    configure: (inout NATSConfiguration) -> Void = { _ in },
    _ body: (ServerProcess, NATSConnection) async throws -> T
) async throws -> T {
    let server = try await TestServers.nats(jetStream: true)
    return try await server.withRunning { server in
        let connection = try await NATSConnection.connect(configuration(server, configure))
        do {
            let result = try await body(server, connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }
}

func configuration(_ server: ServerProcess, _ configure: (inout NATSConfiguration) -> Void = { _ in }) -> NATSConfiguration {
    var configuration = NATSConfiguration(urls: ["nats://127.0.0.1:\(server.port)"])
    configure(&configuration)
    return configuration
}


/// Collects up to `count` messages from `subscription`, giving up after `timeout`. The iteration
/// ends by cancellation, so the subscription delivers nothing afterwards.
func collect(_ subscription: NATSSubscription, count: Int, timeout: Duration = .seconds(5)) async -> [NATSMessage] {
    let collected = Locked<[NATSMessage]>([])
    await withTaskGroup(of: Void.self) { group in
        group.addTask {
            for await message in subscription {
                let total = collected.withLock {
                    $0.append(message)
                    return $0.count
                }
                if total >= count { break }
            }
        }
        group.addTask { try? await Task.sleep(for: timeout) }
        await group.next()
        group.cancelAll()
    }
    return collected.value
}

/// A value shared between test tasks.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }

    var value: Value { mutex.withLock { $0 } }
}

func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }
