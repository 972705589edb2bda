import GRPCCore
import Prometheus

/// Counts the calls a gRPC server answers, by method and outcome (`goim_<service>_rpc_requests_total{method,code}`)
/// and times them (`..._rpc_duration_seconds{method}`): one histogram update per call. For unary calls (every call
/// these services serve) the handler has run when `next` returns; a streaming response is timed to its start only.
public struct RPCMetricsInterceptor: ServerInterceptor {
    private let telemetry: Telemetry
    private let prefix: String

    /// - Parameter prefix: `goim_logic`, `goim_comet`.
    public init(telemetry: Telemetry, prefix: String) {
        self.telemetry = telemetry
        self.prefix = prefix
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = context.descriptor.method
        let start = ContinuousClock.now
        let code: String
        defer {
            telemetry.latency("\(prefix)_rpc_duration_seconds", "Time to answer gRPC calls, by method.", labels: [("method", method)])
                .record(start.elapsed)
            telemetry.counter("\(prefix)_rpc_requests_total", "gRPC calls answered, by method and status code.", labels: [("method", method), ("code", code)])
                .increment()
        }
        do {
            let response = try await next(request, context)
            switch response.accepted {
            case .success: code = "ok"
            case .failure(let error): code = "\(error.code)"
            }
            return response
        } catch let error as RPCError {
            code = "\(error.code)"
            throw error
        } catch {
            code = "unknown"
            throw error
        }
    }
}
