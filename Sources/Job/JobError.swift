/// Errors of the job module, each with a message an operator understands.
public enum JobError: Error, CustomStringConvertible, Sendable {
    /// A registry record's `rpc_addr` is not `host:port`.
    case badCometAddress(String)
    /// A queue message is not a valid `goim.logic.PushMsg`.
    case malformedMessage(reason: String)

    public var description: String {
        switch self {
        case .badCometAddress(let address):
            "comet gRPC address \"\(address)\" is not host:port"
        case .malformedMessage(let reason):
            "malformed queue message: \(reason)"
        }
    }
}
