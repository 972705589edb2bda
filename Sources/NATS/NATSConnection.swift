import CNats
import Logging
import NIOPosix
import Primitives
import ServiceLifecycle
import Synchronization

/// A NATS connection (libnats `natsConnection`), reconnecting on its own.
///
/// libnats runs its own threads for socket I/O, reconnects and message delivery. Its calls that
/// wait for the server (connect, flush, request, JetStream publish/fetch/ack) run on this
/// connection's own `NIOThreadPool` (`NATSConfiguration.blockingThreads`), never on the Swift
/// cooperative pool or an event loop; calls that only queue bytes (publish, subscribe) run inline.
///
/// Call `close()` or `drain(timeout:)` when done. As a `Service` it drains on graceful shutdown.
public final class NATSConnection: @unchecked Sendable {
    // @unchecked Sendable: `connection` is created before init and destroyed only in deinit, and
    // libnats connections are thread-safe; all other stored properties are Sendable.
    let connection: OpaquePointer
    let pool: NIOThreadPool
    let events: ConnectionEvents

    private init(connection: OpaquePointer, pool: NIOThreadPool, events: ConnectionEvents) {
        self.connection = connection
        self.pool = pool
        self.events = events
    }

    deinit {
        // Cheap after close(); otherwise this closes the connection first.
        natsConnection_Destroy(connection)
        pool.shutdownGracefully { _ in }
    }

    /// Connects to the first reachable server of `configuration.urls`.
    public static func connect(
        _ configuration: NATSConfiguration,
        logger: Logger = Logger(label: "goim.nats", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> NATSConnection {
        let pool = NIOThreadPool(numberOfThreads: max(1, configuration.blockingThreads))
        pool.start()
        let events = ConnectionEvents(logger: logger)
        do {
            let pointer = try await pool.runIfActive { try openConnection(configuration, events: events) }
            logger.debug("NATS connected", metadata: ["goim.nats.urls": "\(configuration.urls)"])
            return NATSConnection(connection: pointer.raw, pool: pool, events: events)
        } catch {
            try? await pool.shutdownGracefully()
            throw error
        }
    }

    /// True while connected to a server (false while reconnecting, draining or closed).
    public var isConnected: Bool {
        natsConnection_Status(connection) == NATS_CONN_STATUS_CONNECTED
    }

    /// Publishes a message. It only appends to libnats' outgoing buffer (libnats' flusher thread
    /// writes it out), so it does not wait for the server; while reconnecting it is buffered up to
    /// libnats' reconnect buffer (8 MiB). Use `flush` to know the server has it.
    public func publish(_ subject: String, payload: [UInt8], headers: [String: String] = [:]) async throws {
        try publishNow(subject, reply: nil, payload: payload, headers: headers)
    }

    /// Sends a request and waits up to `timeout` for the first reply. Throws `.noResponders` at
    /// once when nobody subscribes to `subject`, `.timeout` when nobody answered in time.
    public func request(_ subject: String, payload: [UInt8], timeout: Duration) async throws -> NATSMessage {
        try await request(subject, payload: payload, timeout: timeout, operation: "request to \(subject)")
    }

    /// Waits until the server has processed everything sent so far (a PING/PONG round trip).
    public func flush(timeout: Duration = .seconds(2)) async throws {
        try await blocking("flush") { connection in
            try check(natsConnection_FlushTimeout(connection, timeout.milliseconds), "flush")
        }
    }

    /// Stops the subscriptions, lets their buffered messages be handled, flushes what was
    /// published, then closes. libnats closes anyway after `timeout`.
    public func drain(timeout: Duration = .seconds(5)) async throws {
        // Returns at once: libnats drains on its own thread and then closes the connection.
        events.markClosing()
        let status = natsConnection_DrainTimeout(connection, timeout.milliseconds)
        if status != NATS_CONNECTION_CLOSED && status != NATS_DRAINING {
            try check(status, "drain")
        }
        await events.waitUntilClosed()
        try? await pool.shutdownGracefully()
    }

    /// Closes the connection at once; blocked calls (flush, request, fetch) fail with `.connectionClosed`.
    public func close() async {
        events.markClosing()
        _ = try? await blocking("close", cancellable: false) { natsConnection_Close($0) }
        try? await pool.shutdownGracefully()
    }

    /// A JetStream context on this connection; `requestTimeout` bounds its API calls and publish acks.
    public func jetStream(requestTimeout: Duration = .seconds(5)) throws -> JetStream {
        try JetStream(connection: self, requestTimeout: requestTimeout)
    }

    // MARK: - Internals shared by the other files

    /// Runs a blocking libnats call on this connection's thread pool. The closure keeps `self`
    /// (and so the C connection) alive until it returns. A `cancellable` call still waiting for
    /// a thread is skipped when the task is cancelled (a running one always completes); clean-up
    /// calls pass `false` so that they also run in a cancelled task.
    func blocking<T: Sendable>(
        _ operation: @autoclosure () -> String, cancellable: Bool = true,
        _ body: @escaping @Sendable (OpaquePointer) throws -> T
    ) async throws -> T {
        guard cancellable else {
            let operation = operation()
            return try await withCheckedThrowingContinuation { continuation in
                pool.submit { state in
                    guard case .active = state else {
                        return continuation.resume(throwing: NATSError.closed(operation))
                    }
                    continuation.resume(with: Result { try body(self.connection) })
                }
            }
        }
        do {
            return try await pool.runIfActive { try body(self.connection) }
        } catch is NIOThreadPoolError.ThreadPoolInactive {
            throw NATSError.closed(operation())
        } catch is CancellationError where !Task.isCancelled {
            // The pool cancels queued work when close() shuts it down.
            throw NATSError.closed(operation())
        }
    }

    func request(_ subject: String, payload: [UInt8], timeout: Duration, operation: String) async throws -> NATSMessage {
        try await blocking(operation) { connection in
            var reply: OpaquePointer?
            let status = subject.withCString { subject in
                payload.withUnsafeBytes {
                    natsConnection_Request(&reply, connection, subject, $0.baseAddress, Int32($0.count), timeout.milliseconds)
                }
            }
            try check(status, operation)
            guard let reply else { throw NATSError(NATS_ERR, operation) }
            defer { natsMsg_Destroy(reply) }
            return NATSMessage(copying: reply)
        }
    }

    func publishNow(_ subject: String, reply: String?, payload: [UInt8], headers: [String: String]) throws {
        let status = subject.withCString { subject in
            withOptionalCString(reply) { reply in
                payload.withUnsafeBytes { bytes -> natsStatus in
                    let count = Int32(bytes.count)
                    if headers.isEmpty, let reply {
                        return natsConnection_PublishRequest(connection, subject, reply, bytes.baseAddress, count)
                    }
                    if headers.isEmpty {
                        return natsConnection_Publish(connection, subject, bytes.baseAddress, count)
                    }
                    var msg: OpaquePointer?
                    var status = natsMsg_Create(&msg, subject, reply, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), count)
                    defer { natsMsg_Destroy(msg) }
                    for (key, value) in headers where status == NATS_OK {
                        status = natsMsgHeader_Set(msg, key, value)
                    }
                    return status == NATS_OK ? natsConnection_PublishMsg(connection, msg) : status
                }
            }
        }
        try check(status, "publish to \(subject)")
    }
}

extension NATSConnection: Service {
    /// Waits for graceful shutdown, then drains (cancellation closes at once).
    public func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            await close()
            return
        }
        try await drain(timeout: .seconds(5))
    }
}

/// Builds libnats options from the configuration and connects (blocking: run on the pool).
private func openConnection(_ configuration: NATSConfiguration, events: ConnectionEvents) throws -> CPointer {
    var options: OpaquePointer?
    try check(natsOptions_Create(&options), "connect")
    defer { natsOptions_Destroy(options) }

    // Ownership: libnats holds this +1 reference to `events` for the connection's callbacks and
    // the closed callback releases it (libnats calls it once, last). A failed connect never
    // calls it, so we release it there.
    let closure = Unmanaged.passRetained(events).toOpaque()
    var connection: OpaquePointer?
    var status = withCStringArray(configuration.urls) {
        natsOptions_SetServers(options, $0, Int32(configuration.urls.count))
    }
    let settings: [() -> natsStatus] = [
        { natsOptions_SetName(options, configuration.name) },
        { natsOptions_SetTimeout(options, configuration.connectTimeout.milliseconds) },
        { natsOptions_SetAllowReconnect(options, true) },
        { natsOptions_SetReconnectWait(options, configuration.reconnectWait.milliseconds) },
        { natsOptions_SetMaxReconnect(options, Int32(clamping: configuration.maxReconnect)) },
        { natsOptions_SetMaxPendingMsgs(options, Int32(clamping: configuration.maxPendingMessages)) },
        { natsOptions_SetFailRequestsOnDisconnect(options, configuration.failRequestsOnDisconnect) },
        { natsOptions_SetDisconnectedCB(options, onDisconnected, closure) },
        { natsOptions_SetReconnectedCB(options, onReconnected, closure) },
        { natsOptions_SetClosedCB(options, onClosed, closure) },
        { natsOptions_SetErrorHandler(options, onAsyncError, closure) },
        {
            guard let user = configuration.user else { return NATS_OK }
            return natsOptions_SetUserInfo(options, user, configuration.password)
        },
        {
            guard let token = configuration.token else { return NATS_OK }
            return natsOptions_SetToken(options, token)
        },
        {
            guard let file = configuration.credentialsFile else { return NATS_OK }
            return natsOptions_SetUserCredentialsFromFiles(options, file, nil)
        },
        { configuration.tls == nil ? NATS_OK : natsOptions_SetSecure(options, true) },
        {
            guard let file = configuration.tls?.caFile else { return NATS_OK }
            return natsOptions_LoadCATrustedCertificates(options, file)
        },
        {
            guard let tls = configuration.tls, let certificate = tls.certificateFile, let key = tls.keyFile else { return NATS_OK }
            return natsOptions_LoadCertificatesChain(options, certificate, key)
        },
        { natsConnection_Connect(&connection, options) },
    ]
    for setting in settings where status == NATS_OK {
        status = setting()
    }
    guard status == NATS_OK, let connection else {
        let error = NATSError(status, "connect to \(configuration.urls.joined(separator: ","))")
        Unmanaged<ConnectionEvents>.fromOpaque(closure).release()
        throw error
    }
    return CPointer(raw: connection)
}

/// What libnats' connection callbacks need: a logger and who waits for the close.
final class ConnectionEvents: Sendable {
    let logger: Logger
    private let closed = OnceValue<Void>()
    /// Set by `drain`/`close`: the disconnection libnats then reports is ours, not a lost server.
    private let closing = Atomic<Bool>(false)

    init(logger: Logger) {
        self.logger = logger
    }

    func markClosing() { closing.store(true, ordering: .sequentiallyConsistent) }

    var isClosing: Bool { closing.load(ordering: .sequentiallyConsistent) }

    func markClosed() { closed.publish() }

    /// Returns once libnats reported the connection closed (or the calling task is cancelled).
    func waitUntilClosed() async {
        try? await closed.value()
    }
}

// libnats calls these on its own callback thread; `closure` is the retained ConnectionEvents.

private func onDisconnected(_ connection: OpaquePointer?, _ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    let events = Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
    // libnats reports a disconnection on close and drain too: only an unexpected one is worth a warning.
    if events.isClosing {
        events.logger.debug("NATS disconnected (closing)")
    } else {
        events.logger.warning("NATS disconnected, reconnecting")
    }
}

private func onReconnected(_ connection: OpaquePointer?, _ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    let events = Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
    var buffer = [CChar](repeating: 0, count: 256)
    let url = buffer.withUnsafeMutableBufferPointer { buffer in
        natsConnection_GetConnectedUrl(connection, buffer.baseAddress, buffer.count) == NATS_OK
            ? String(cString: buffer.baseAddress!) : "?"
    }
    events.logger.info("NATS reconnected", metadata: ["goim.nats.url": "\(url)"])
}

private func onClosed(_ connection: OpaquePointer?, _ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    let events = Unmanaged<ConnectionEvents>.fromOpaque(closure).takeRetainedValue()  // the +1 from openConnection
    events.logger.debug("NATS connection closed")
    events.markClosed()
}

private func onAsyncError(
    _ connection: OpaquePointer?, _ subscription: OpaquePointer?, _ status: natsStatus, _ closure: UnsafeMutableRawPointer?
) {
    guard let closure else { return }
    let events = Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
    let subject = subscription.flatMap { natsSubscription_GetSubject($0) }.map { String(cString: $0) } ?? "-"
    events.logger.warning(
        "NATS asynchronous error",
        metadata: ["goim.nats.error": "\(String(cString: natsStatus_GetText(status)))", "goim.nats.subject": "\(subject)"])
}
