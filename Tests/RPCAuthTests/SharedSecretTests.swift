import GRPCCore
import GRPCNIOTransportHTTP2
import GoIMRPC
import Logging
import Testing

@testable import RPCAuth

@Suite("Shared secret of the internal gRPC ports")
struct SharedSecretTests {
    @Test("the verdict for each kind of call")
    func verdicts() {
        let strict = SharedSecretPolicy(secret: "s3cret", allowUnauthenticated: false)
        #expect(strict.verdict(presented: "Bearer s3cret") == .accept)
        #expect(strict.verdict(presented: "bearer  s3cret") == .accept)
        #expect(strict.verdict(presented: nil) != .accept)
        #expect(strict.verdict(presented: "Bearer s3cre") != .accept)
        #expect(strict.verdict(presented: "Bearer s3cret!") != .accept)
        #expect(strict.verdict(presented: "s3cret") != .accept)
        #expect(strict.verdict(presented: "Basic s3cret") != .accept)

        // goim peers send nothing: let in when allowed, but a wrong secret is still a misconfiguration.
        let lenient = SharedSecretPolicy(secret: "s3cret", allowUnauthenticated: true)
        #expect(lenient.verdict(presented: nil) == .accept)
        #expect(lenient.verdict(presented: "Bearer wrong") != .accept)

        // No secret configured (a loopback port): nothing to check.
        let none = SharedSecretPolicy(secret: "", allowUnauthenticated: false)
        #expect(none.verdict(presented: nil) == .accept)
        #expect(none.verdict(presented: "Bearer anything") == .accept)
    }

    /// A `goim.comet.Comet` that answers `Rooms` only.
    struct RoomsOnly: Goim_Comet_Comet.SimpleServiceProtocol {
        func pushMsg(request: Goim_Comet_PushMsgReq, context: ServerContext) async throws -> Goim_Comet_PushMsgReply {
            throw RPCError(code: .unimplemented, message: "")
        }
        func broadcast(request: Goim_Comet_BroadcastReq, context: ServerContext) async throws -> Goim_Comet_BroadcastReply {
            throw RPCError(code: .unimplemented, message: "")
        }
        func broadcastRoom(request: Goim_Comet_BroadcastRoomReq, context: ServerContext) async throws -> Goim_Comet_BroadcastRoomReply {
            throw RPCError(code: .unimplemented, message: "")
        }
        func rooms(request: Goim_Comet_RoomsReq, context: ServerContext) async throws -> Goim_Comet_RoomsReply {
            var reply = Goim_Comet_RoomsReply()
            reply.rooms = ["live://1": true]
            return reply
        }
    }

    /// Calls `Rooms` on a server requiring `serverSecret`, from a client sending `clientSecret`.
    static func call(serverSecret: String, allowUnauthenticated: Bool = false, clientSecret: String) async throws -> RPCError.Code? {
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
            services: [RoomsOnly()],
            interceptors: [
                SharedSecretServerInterceptor(
                    policy: SharedSecretPolicy(secret: serverSecret, allowUnauthenticated: allowUnauthenticated),
                    logger: Logger(label: "test"))
            ])
        return try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            defer { server.beginGracefulShutdown() }
            let port = try #require(try await server.listeningAddress?.ipv4?.port)
            let transport = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
            return try await withGRPCClient(transport: transport, interceptors: [SharedSecretClientInterceptor(secret: clientSecret)]) {
                client in
                do {
                    let reply = try await Goim_Comet_Comet.Client(wrapping: client).rooms(Goim_Comet_RoomsReq())
                    #expect(reply.rooms == ["live://1": true])
                    return nil
                } catch let error as RPCError {
                    return error.code
                }
            }
        }
    }

    @Test("over gRPC: the right secret passes, a missing or wrong one gets UNAUTHENTICATED before any handler")
    func overGRPC() async throws {
        #expect(try await Self.call(serverSecret: "s3cret", clientSecret: "s3cret") == nil)
        #expect(try await Self.call(serverSecret: "s3cret", clientSecret: "") == .unauthenticated)
        #expect(try await Self.call(serverSecret: "s3cret", clientSecret: "other") == .unauthenticated)
        #expect(try await Self.call(serverSecret: "s3cret", allowUnauthenticated: true, clientSecret: "") == nil)
        #expect(try await Self.call(serverSecret: "", clientSecret: "anything") == nil)
    }
}
