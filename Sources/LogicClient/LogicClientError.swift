/// Errors of comet's Logic client beyond the gRPC status a call may fail with.
public enum LogicClientError: Error, CustomStringConvertible, Sendable {
    /// The client was shut down while a call waited for its batch.
    case stopped
    /// Logic answered something the comet cannot use.
    case badReply(String)

    public var description: String {
        switch self {
        case .stopped: "the Logic client has stopped"
        case .badReply(let reason): "unusable reply from logic: \(reason)"
        }
    }
}
