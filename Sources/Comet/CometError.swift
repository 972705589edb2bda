/// Errors the comet reports to whoever starts it. Per-connection problems are never thrown: they close that
/// connection with a log line.
public enum CometError: Error, CustomStringConvertible, Sendable {
    /// A listener could not bind.
    case bind(transport: String, address: String, underlying: any Error)
    /// A WebSocket-over-TLS certificate or key could not be loaded.
    case tls(file: String, underlying: any Error)
    /// The whitelist log file could not be opened.
    case whiteLog(path: String, reason: String)
    /// The comet stopped before its listeners were up.
    case notRunning
    /// Logic answered something the comet cannot use.
    case logicReply(String)

    public var description: String {
        switch self {
        case .bind(let transport, let address, let underlying):
            "cannot listen for \(transport) on \(address): \(underlying)"
        case .tls(let file, let underlying):
            "cannot load TLS file \(file): \(underlying)"
        case .whiteLog(let path, let reason):
            "whitelist.whiteLog \(path): \(reason)"
        case .notRunning:
            "the comet is not running"
        case .logicReply(let reason):
            "unusable reply from logic: \(reason)"
        }
    }
}
