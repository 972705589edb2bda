import GRPCCore
import GoIMClient
import GoIMProtocol
import GoIMRPC
import Logging
import NIOCore
import RPCAuth
import TestLogic
import Testing

@testable import Comet

extension CometSuite {
    @Suite("Internal secret: comet's gRPC port and its calls to logic")
    struct RPCAuthTests {
        static func logicRequiring(_ secret: String) -> [any ServerInterceptor] {
            [SharedSecretServerInterceptor(
                policy: SharedSecretPolicy(secret: secret, allowUnauthenticated: false), logger: Logger(label: "test-logic"))]
        }

        @Test("comet's gRPC port refuses pushes without the secret and delivers those with it")
        func cometPortRequiresTheSecret() async throws {
            try await withComet(configure: { $0.rpcAuth.secret = "deploy-s3cret" }, rpcSecret: "deploy-s3cret") { comet in
                let client = try await comet.client(auth: auth(mid: 1, key: "k", room: "live://secret"))
                try await comet.broadcastRoom("live://secret", body: "with the secret")
                #expect(String(buffer: try await client.receive(1)[0].packet.body) == "with the secret")

                let stranger = GRPCClient(
                    transport: try .http2NIOPosix(
                        target: .ipv4(address: "127.0.0.1", port: comet.addresses.rpc), transportSecurity: .plaintext))
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await stranger.runConnections() }
                    defer { stranger.beginGracefulShutdown() }
                    var request = Goim_Comet_BroadcastRoomReq()
                    request.roomID = "live://secret"
                    request.proto = Envelope.proto(operation: 1000, bodies: ["without"])
                    await #expect {
                        _ = try await Goim_Comet_Comet.Client(wrapping: stranger).broadcastRoom(request)
                    } throws: { error in
                        (error as? RPCError)?.code == .unauthenticated
                    }
                }
                try await comet.broadcastRoom("live://secret", body: "again with it")
                // Nothing from the refused call came in between.
                #expect(String(buffer: try await client.receive(1)[0].packet.body) == "again with it")
            }
        }

        @Test("comet sends its secret to logic: the same secret authenticates clients, another fails their auth")
        func cometSendsTheSecretToLogic() async throws {
            try await withComet(
                configure: { $0.rpcAuth.secret = "deploy-s3cret" }, logicInterceptors: Self.logicRequiring("deploy-s3cret"),
                rpcSecret: "deploy-s3cret"
            ) { comet in
                let client = try await comet.client(auth: auth(mid: 1, key: "ok"))
                #expect(try await client.heartbeat() == 0)
            }
            try await withComet(
                configure: { $0.rpcAuth.secret = "stale" }, logicInterceptors: Self.logicRequiring("deploy-s3cret"),
                rpcSecret: "stale"
            ) { comet in
                let client = try await GoIMClient.connect(port: comet.tcpPort, transport: .tcp)
                _ = try? await client.auth(auth(mid: 1, key: "refused"), timeout: .seconds(5))
                try await client.waitUntilClosed()
                try await comet.waitForStatistics { $0.authFailures == 1 }
            }
        }
    }
}
