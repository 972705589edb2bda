import CNats

/// A JetStream stream's settings (the subset goim needs). nil limits mean "unlimited".
public struct StreamConfiguration: Sendable, Equatable {
    public enum Storage: Sendable, Equatable { case file, memory }
    public enum Retention: Sendable, Equatable { case limits, workQueue, interest }

    public var name: String
    public var subjects: [String]
    public var storage: Storage
    public var maxAge: Duration?
    public var maxBytes: Int64?
    public var maxMessages: Int64?
    public var replicas: Int
    /// How long the server remembers message IDs to drop duplicate publishes (server default 2 min).
    public var duplicateWindow: Duration?
    public var retention: Retention

    public init(
        name: String, subjects: [String], storage: Storage = .file, maxAge: Duration? = nil,
        maxBytes: Int64? = nil, maxMessages: Int64? = nil, replicas: Int = 1,
        duplicateWindow: Duration? = nil, retention: Retention = .limits
    ) {
        self.name = name
        self.subjects = subjects
        self.storage = storage
        self.maxAge = maxAge
        self.maxBytes = maxBytes
        self.maxMessages = maxMessages
        self.replicas = replicas
        self.duplicateWindow = duplicateWindow
        self.retention = retention
    }
}

/// The stream's answer to a JetStream publish.
/// A durable consumer's counts (`JetStream.consumerInfo`).
public struct ConsumerInfo: Sendable, Equatable {
    /// Messages in the stream the consumer has not delivered yet: the lag.
    public var pending: UInt64
    /// Delivered, not acknowledged yet.
    public var ackPending: Int
    /// Delivered more than once and not acknowledged yet.
    public var redelivered: Int
    /// Pull requests waiting on the server.
    public var waiting: Int
}

public struct PublishAck: Sendable, Equatable {
    public let stream: String
    public let sequence: UInt64
    /// True when the message ID was seen within the duplicate window: the message was not stored again.
    public let duplicate: Bool
}

/// A JetStream context (libnats `jsCtx`). Every call waits for the server on the connection's
/// thread pool, at most `requestTimeout`.
public final class JetStream: @unchecked Sendable {
    // @unchecked Sendable: `context` is created in init and destroyed only in deinit, and libnats'
    // JetStream context is thread-safe; the other stored properties are Sendable.
    public let connection: NATSConnection
    let context: OpaquePointer
    let requestTimeout: Duration

    init(connection: NATSConnection, requestTimeout: Duration) throws {
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = requestTimeout.milliseconds
        var context: OpaquePointer?
        try check(natsConnection_JetStream(&context, connection.connection, &options), "create JetStream context")
        self.context = context!
        self.connection = connection
        self.requestTimeout = requestTimeout
    }

    deinit {
        jsCtx_Destroy(context)
    }

    /// Adds the stream, or updates it when it exists with a different configuration (the server
    /// refuses some changes, e.g. of storage: that is thrown).
    ///
    /// Replicas are part of the configuration: a stream that exists with other replicas is updated to the new count
    /// (nats-server 2.9 scales a clustered stream up and down; a server that is not clustered refuses more than one
    /// replica with JetStream error 10074). `timeout` bounds each API call (default `requestTimeout`).
    public func createOrUpdateStream(_ config: StreamConfiguration, timeout: Duration? = nil) async throws {
        let operation = "create or update stream \(config.name)"
        let wait = (timeout ?? requestTimeout).milliseconds
        try await connection.blocking(operation) { _ in
            try config.withCConfig { cConfig in
                var options = jsOptions()
                jsOptions_Init(&options)
                options.Wait = wait
                var info: UnsafeMutablePointer<jsStreamInfo>?
                var code = jsErrCode(0)
                var status = js_AddStream(&info, self.context, cConfig, &options, &code)
                if status != NATS_OK && code == JSStreamNameExistErr {  // exists with another config
                    code = jsErrCode(0)
                    status = js_UpdateStream(&info, self.context, cConfig, &options, &code)
                }
                jsStreamInfo_Destroy(info)
                try check(status, operation, jetStreamCode: code)
            }
        }
    }

    /// Publishes and waits for the stream's ack. With `messageID`, a repeat within the stream's
    /// duplicate window is acknowledged as `duplicate` and not stored twice. Without a stream on
    /// `subject` this fails at once with `.noResponders`. While disconnected it fails with
    /// `.timeout` after `requestTimeout`, yet libnats may still send it after reconnecting: retry
    /// with the same `messageID` to stay exactly-once. A publish waiting for its ack when the
    /// connection drops fails at once with `.connectionDisconnected` (`failRequestsOnDisconnect`).
    /// In a cluster, while the stream elects a new leader, publishes time out or find no
    /// responders: `NATSError.isTransient` tells those apart. `timeout` overrides `requestTimeout`.
    public func publish(
        _ subject: String, payload: [UInt8], messageID: String? = nil, timeout: Duration? = nil
    ) async throws -> PublishAck {
        let operation = "publish to \(subject)"
        let wait = (timeout ?? requestTimeout).milliseconds
        return try await connection.blocking(operation) { _ in
            var options = jsPubOptions()
            jsPubOptions_Init(&options)
            options.MaxWait = wait
            var ack: UnsafeMutablePointer<jsPubAck>?
            var code = jsErrCode(0)
            let status = subject.withCString { subject in
                withOptionalCString(messageID) { messageID in
                    options.MsgId = messageID
                    return payload.withUnsafeBytes {
                        js_Publish(&ack, self.context, subject, $0.baseAddress, Int32($0.count), &options, &code)
                    }
                }
            }
            defer { jsPubAck_Destroy(ack) }
            if status == NATS_NO_RESPONDERS {
                throw NATSError(
                    code: .noResponders, message: "no JetStream stream listens on \(subject)",
                    operation: operation)
            }
            try check(status, operation, jetStreamCode: code)
            guard let ack = ack?.pointee else { throw NATSError(NATS_ERR, operation) }
            return PublishAck(stream: String(cString: ack.Stream), sequence: ack.Sequence, duplicate: ack.Duplicate)
        }
    }

    /// The durable consumer's backlog as the server sees it (for job's lag metrics): messages not yet delivered,
    /// delivered and not acknowledged, redelivered, and pull requests waiting.
    public func consumerInfo(stream: String, durable: String) async throws -> ConsumerInfo {
        let operation = "read consumer \(durable) on stream \(stream)"
        return try await connection.blocking(operation) { _ in
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var code = jsErrCode(0)
            let status = js_GetConsumerInfo(&info, self.context, stream, durable, nil, &code)
            defer { jsConsumerInfo_Destroy(info) }
            try check(status, operation, jetStreamCode: code)
            guard let info = info?.pointee else { throw NATSError(NATS_ERR, operation) }
            return ConsumerInfo(
                pending: info.NumPending, ackPending: Int(info.NumAckPending), redelivered: Int(info.NumRedelivered),
                waiting: Int(info.NumWaiting))
        }
    }

    /// Creates the durable pull consumer `durable` on `stream` (or updates its settings when it
    /// exists) and binds to it. Several `PullConsumer`s, in one process or many, may bind to the same
    /// durable: each message then goes to one of them. Closing a `PullConsumer` keeps the durable.
    public func pullConsumer(
        stream: String, durable: String, filterSubject: String?, ackWait: Duration = .seconds(30),
        maxAckPending: Int = 1024, maxDeliver: Int = -1
    ) async throws -> PullConsumer {
        let operation = "create pull consumer \(durable) on stream \(stream)"
        let subscription = try await connection.blocking(operation) { _ in
            try stream.withCString { stream in
                try durable.withCString { durable in
                    try withOptionalCString(filterSubject) { filter in
                        var config = jsConsumerConfig()
                        jsConsumerConfig_Init(&config)
                        config.Durable = durable
                        config.DeliverPolicy = js_DeliverAll
                        config.AckPolicy = js_AckExplicit
                        config.AckWait = ackWait.nanoseconds
                        config.MaxAckPending = Int64(maxAckPending)
                        config.MaxDeliver = Int64(maxDeliver)
                        config.FilterSubject = filter
                        var info: UnsafeMutablePointer<jsConsumerInfo>?
                        var code = jsErrCode(0)
                        // nats-server 2.9 creates, returns the same, or updates an existing durable.
                        let status = js_AddConsumer(&info, self.context, stream, &config, nil, &code)
                        jsConsumerInfo_Destroy(info)
                        try check(status, operation, jetStreamCode: code)

                        // Bind to that consumer: libnats then neither creates nor checks it.
                        var options = jsSubOptions()
                        jsSubOptions_Init(&options)
                        options.Stream = stream
                        options.Consumer = durable
                        var subscription: OpaquePointer?
                        try check(
                            js_PullSubscribe(&subscription, self.context, filter, durable, nil, &options, &code),
                            operation, jetStreamCode: code)
                        return CPointer(raw: subscription!)
                    }
                }
            }
        }
        return PullConsumer(jetStream: self, subscription: subscription.raw, name: durable)
    }
}

extension StreamConfiguration {
    /// Runs `body` with the libnats form of this configuration (pointers valid only inside `body`).
    func withCConfig<R>(_ body: (UnsafeMutablePointer<jsStreamConfig>) throws -> R) throws -> R {
        try name.withCString { name in
            try withCStringArray(subjects) { subjects in
                var config = jsStreamConfig()
                jsStreamConfig_Init(&config)
                config.Name = name
                config.Subjects = subjects
                config.SubjectsLen = Int32(self.subjects.count)
                config.Storage = storage == .file ? js_FileStorage : js_MemoryStorage
                switch retention {
                case .limits: config.Retention = js_LimitsPolicy
                case .workQueue: config.Retention = js_WorkQueuePolicy
                case .interest: config.Retention = js_InterestPolicy
                }
                config.MaxAge = maxAge?.nanoseconds ?? 0  // 0: unlimited
                config.MaxBytes = maxBytes ?? -1
                config.MaxMsgs = maxMessages ?? -1
                config.Replicas = Int64(replicas)
                config.Duplicates = duplicateWindow?.nanoseconds ?? 0  // 0: server default
                return try body(&config)
            }
        }
    }
}
