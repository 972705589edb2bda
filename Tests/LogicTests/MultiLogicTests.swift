import Foundation
import GoIMRPC
import Logging
import ServiceLifecycle
import ServiceRuntime
import TestSupport
import Testing

@testable import Logic

@Suite("Several logic processes", .startsServers)
struct MultiLogicTests {
    @Test("two logic servers share one Redis and one NATS: a session stored through one is pushed through the other")
    func twoLogics() async throws {
        try await LogicHarness.run { h in
            let second = try await LogicServer(configuration: h.configuration, logger: Logger(label: "second"))
            let group = ServiceGroup(
                configuration: ServiceProcess.configuration(second.services, logger: Logger(label: "second"), maximumShutdown: .seconds(15)))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                defer { tasks.cancelAll() }
                let secondPort = try await second.httpPort()
                try await waitUntil("the second logic's queue") { second.queue.isConnected }
                let a = h.comet("a")
                _ = try await h.withLogicClient { client in
                    try await client.connect(RPCTests.connectRequest(server: a, #"{"mid":31,"key":"shared"}"#))
                }
                let subscriber = try await h.pushSubscriber()
                let reply = try await TestHTTP.post(port: secondPort, "/goim/push/mids?operation=3&mids=31", "via second")
                #expect(reply == HTTPPushTests.ok)
                let (_, message) = try await subscriber.next()
                #expect(message.server == a && message.keys == ["shared"] && message.msg == Data("via second".utf8))
                await group.triggerGracefulShutdown()
                try await tasks.next()
            }
        }
    }
}
