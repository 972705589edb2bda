import GRPCCore
import Logging
import Primitives

/// The internal gRPC ports (comet's `goim.comet.Comet`, logic's `goim.logic.Logic`) accept only callers that present
/// the deployment's shared secret as `authorization: Bearer <secret>` metadata (`[rpcAuth]` in every service's
/// configuration). goim's own job and logic send no metadata: they are let in only where the operator said so
/// (`rpcAuth.allowUnauthenticated = true`).
public struct SharedSecretPolicy: Sendable, Equatable {
    /// The secret; empty means none configured (then nothing is checked and nothing is sent).
    public var secret: String
    /// Calls without `authorization` metadata are let in (goim peers). A wrong secret is refused all the same.
    public var allowUnauthenticated: Bool

    public init(secret: String, allowUnauthenticated: Bool) {
        self.secret = secret
        self.allowUnauthenticated = allowUnauthenticated
    }

    static let metadataKey = "authorization"

    /// What the server does with a call carrying `presented` (the `authorization` value, if any).
    enum Verdict: Equatable {
        case accept
        case refuse(String)
    }

    func verdict(presented: String?) -> Verdict {
        if secret.isEmpty { return .accept }
        guard let presented else {
            return allowUnauthenticated
                ? .accept
                : .refuse("this port requires the deployment's internal secret ([rpcAuth] secret); none was sent")
        }
        let parts = presented.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer",
            ConstantTime.equals(parts[1].drop(while: { $0 == " " }), secret)
        else { return .refuse("the internal secret sent does not match this service's [rpcAuth] secret") }
        return .accept
    }
}

/// Refuses calls without the shared secret with `unauthenticated`, before any handler runs.
public struct SharedSecretServerInterceptor: ServerInterceptor {
    private let policy: SharedSecretPolicy
    private let logger: Logger

    public init(policy: SharedSecretPolicy, logger: Logger) {
        self.policy = policy
        self.logger = logger
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let presented = request.metadata[stringValues: SharedSecretPolicy.metadataKey].first(where: { _ in true })
        switch policy.verdict(presented: presented) {
        case .accept:
            return try await next(request, context)
        case .refuse(let reason):
            logger.warning(
                "internal gRPC call refused",
                metadata: ["goim.peer": "\(context.remotePeer)", "goim.method": "\(context.descriptor)", "goim.reason": "\(reason)"])
            throw RPCError(code: .unauthenticated, message: reason)
        }
    }
}

/// Sends the shared secret with every call (nothing when no secret is configured).
public struct SharedSecretClientInterceptor: ClientInterceptor {
    private let value: String?

    public init(secret: String) {
        value = secret.isEmpty ? nil : "Bearer \(secret)"
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>,
        context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        guard let value else { return try await next(request, context) }
        var request = request
        request.metadata.replaceOrAddString(value, forKey: SharedSecretPolicy.metadataKey)
        return try await next(request, context)
    }
}
