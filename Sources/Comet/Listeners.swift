import GoIMConfig
import GoIMProtocol
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// One bound listener.
struct BoundListener: Sendable {
    let transport: String
    let channel: any Channel
    let port: Int
}

/// The client listeners: TCP, WebSocket and WebSocket over TLS, each on a list of addresses, all on the comet's one
/// event-loop group. No task per connection: pipelines of plain channel handlers.
enum Listeners {
    static func bind(comet: Comet, tls: NIOSSLContext?) async throws -> [BoundListener] {
        let configuration = comet.configuration
        var bound: [BoundListener] = []
        do {
            for address in configuration.tcp.bind {
                // The client's EOF arrives as `ChannelEvent.inputClosed` instead of NIO closing the socket by itself,
                // so `ConnectionHandler` stops direct writes before the socket is closed (see ConnectionHandler).
                let bootstrap = makeBootstrap(comet: comet, socketOptions: true) { channel in
                    initializeTCP(channel, comet: comet)
                }
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                bound.append(try await bindOne(bootstrap, address: address, transport: "tcp"))
            }
            for address in configuration.websocket.bind {
                let bootstrap = makeBootstrap(comet: comet, socketOptions: true) { channel in
                    initializeWebSocket(channel, comet: comet, tls: nil)
                }
                bound.append(try await bindOne(bootstrap, address: address, transport: "websocket"))
            }
            if configuration.websocket.tlsOpen, let tls {
                for address in configuration.websocket.tlsBind {
                    // goim applies the TCP socket options to TLS connections neither.
                    let bootstrap = makeBootstrap(comet: comet, socketOptions: false) { channel in
                        initializeWebSocket(channel, comet: comet, tls: tls)
                    }
                    bound.append(try await bindOne(bootstrap, address: address, transport: "websocket+tls"))
                }
            }
        } catch {
            for listener in bound { try? await listener.channel.close() }
            throw error
        }
        for listener in bound {
            comet.logger.info(
                "listening", metadata: ["goim.transport": "\(listener.transport)", "goim.address": "\(listener.channel.localAddress.map { "\($0)" } ?? "?")"])
        }
        return bound
    }

    private static func bindOne(_ bootstrap: ServerBootstrap, address: HostPort, transport: String) async throws -> BoundListener {
        do {
            let channel = try await bootstrap.bind(host: address.host, port: address.port).get()
            return BoundListener(transport: transport, channel: channel, port: channel.localAddress?.port ?? address.port)
        } catch {
            throw CometError.bind(transport: transport, address: "\(address)", underlying: error)
        }
    }

    private static func makeBootstrap(
        comet: Comet, socketOptions: Bool, initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> ServerBootstrap {
        let configuration = comet.configuration
        let high = configuration.proto.maxOutboundBytes
        var bootstrap = ServerBootstrap(group: comet.group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: high / 2, high: high))
            // Each channel keeps its last receive buffer for reuse. NIO starts it at 2 kB; a client mostly sends
            // 16-byte heartbeats, so start at 256 bytes (it still grows to 64 kB for a client that sends more).
            // About 1.8 kB less per idle connection (heaptrack; docs/benchmarks.md).
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536))
            .childChannelInitializer(initializer)
        if socketOptions {
            let tcp = configuration.tcp
            bootstrap = bootstrap
                .childChannelOption(.tcpOption(.tcp_nodelay), value: tcp.noDelay ? 1 : 0)
                .childChannelOption(.socketOption(.so_keepalive), value: tcp.keepalive ? 1 : 0)
            if tcp.sndbuf > 0 { bootstrap = bootstrap.childChannelOption(.socketOption(.so_sndbuf), value: .init(tcp.sndbuf)) }
            if tcp.rcvbuf > 0 { bootstrap = bootstrap.childChannelOption(.socketOption(.so_rcvbuf), value: .init(tcp.rcvbuf)) }
        } else {
            bootstrap = bootstrap.childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        }
        return bootstrap
    }

    /// TCP: `PacketDecoder` → `ConnectionHandler`.
    static func initializeTCP(_ channel: any Channel, comet: Comet) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let operations = channel.pipeline.syncOperations
            guard let handler = comet.accept(channel, transport: .tcp) else {
                try operations.addHandler(RefuseHandler())
                return
            }
            if comet.configuration.proto.directWrite { handler.directDescriptor = DirectWriter.unresolved }
            try operations.addHandler(ByteToMessageHandler(PacketDecoder(limits: comet.limits)))
            try operations.addHandler(handler)
        }
    }

    /// WebSocket: [TLS] → HTTP/1 server with the WebSocket upgrader; after the upgrade: output gate → (NIO's unused
    /// frame encoder) → frame decoder → `WebSocketAdapter` → `ConnectionHandler`.
    static func initializeWebSocket(_ channel: any Channel, comet: Comet, tls: NIOSSLContext?) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let operations = channel.pipeline.syncOperations
            if let tls { try operations.addHandler(NIOSSLServerHandler(context: tls)) }
            guard let handler = comet.accept(channel, transport: .webSocket) else {
                try operations.addHandler(RefuseHandler())
                return
            }
            // Pushes pass the TLS handler, so only plain WebSocket writes directly.
            if tls == nil, comet.configuration.proto.directWrite {
                handler.directDescriptor = DirectWriter.unresolved
            }
            let bound = NIOLoopBound(handler, eventLoop: channel.eventLoop)
            let limits = comet.limits
            let maxFrameSize = comet.configuration.websocket.maxFrameSize
            let upgrader = NIOTypedWebSocketServerUpgrader<Void>(
                maxFrameSize: maxFrameSize,
                enableAutomaticErrorHandling: false,
                shouldUpgrade: { channel, head in
                    bound.value.requestLine = "\(head.method) \(head.uri)"
                    return channel.eventLoop.makeSucceededFuture(WebSocketPath.accepts(head) ? HTTPHeaders() : nil)
                },
                upgradePipelineHandler: { channel, head in
                    channel.eventLoop.makeCompletedFuture {
                        let operations = channel.pipeline.syncOperations
                        let encoder = try operations.handler(type: WebSocketFrameEncoder.self)
                        let gate = OutputGate()
                        try operations.addHandler(gate, position: .before(encoder))
                        let handler = bound.value
                        handler.output = try operations.context(handler: gate)
                        if tls == nil {
                            // As on TCP: the client's EOF becomes `inputClosed` for ConnectionHandler (which can write
                            // directly from now on). Before the upgrade NIO's HTTP handlers keep NIO's default.
                            try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                        }
                        handler.cookie = head.headers["Cookie"].joined(separator: "; ")
                        try operations.addHandler(WebSocketAdapter(limits: limits, maxMessageSize: max(maxFrameSize, limits.maxPacketLength)))
                        try operations.addHandler(handler)
                    }
                })
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Void>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = bound.value
                        // goim closes without an HTTP response.
                        let request = handler.requestLine.isEmpty ? "a non-upgrade request" : handler.requestLine
                        handler.close(reason: "WebSocket upgrade refused for \(request): only GET /sub upgrades")
                    }
                })
            _ = try operations.configureUpgradableHTTPServerPipeline(
                configuration: .init(upgradeConfiguration: upgrade))
        }
    }
}

/// WebSocket-over-TLS contexts. `certFile`/`privateFile` are paired by position; the first pair is the default, and
/// with several pairs the certificate whose DNS names match the client's SNI name is chosen.
enum TLS {
    static func makeContext(certificateFiles: [String], keyFiles: [String]) throws -> NIOSSLContext {
        struct Identity: Sendable {
            let names: [String]
            let chain: [NIOSSLCertificateSource]
            let key: NIOSSLPrivateKeySource
        }
        var identities: [Identity] = []
        for (certificateFile, keyFile) in zip(certificateFiles, keyFiles) {
            let chain: [NIOSSLCertificate]
            let key: NIOSSLPrivateKey
            do { chain = try NIOSSLCertificate.fromPEMFile(certificateFile) } catch {
                throw CometError.tls(file: certificateFile, underlying: error)
            }
            do { key = try NIOSSLPrivateKey(file: keyFile, format: .pem) } catch {
                throw CometError.tls(file: keyFile, underlying: error)
            }
            var names: [String] = []
            if let leaf = chain.first {
                for name in leaf._subjectAlternativeNames() where name.nameType == .dnsName {
                    names.append(String(decoding: name.contents, as: UTF8.self).lowercased())
                }
            }
            identities.append(Identity(names: names, chain: chain.map { .certificate($0) }, key: .privateKey(key)))
        }
        guard let first = identities.first else {
            throw CometError.tls(file: "websocket.certFile", underlying: TLSConfigurationError.noCertificate)
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: first.chain, privateKey: first.key)
        if identities.count > 1 {
            let choices = identities
            configuration.sslContextCallback = { values, promise in
                guard let host = values.serverHostname?.lowercased(),
                    let match = choices.first(where: { identity in identity.names.contains { matches(host, $0) } })
                else {
                    promise.succeed(.noChanges)
                    return
                }
                var override = NIOSSLContextConfigurationOverride()
                override.certificateChain = match.chain
                override.privateKey = match.key
                promise.succeed(override)
            }
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw CometError.tls(file: certificateFiles.joined(separator: ","), underlying: error)
        }
    }

    /// `name` is a certificate DNS name, possibly `*.example.com` (matching one label).
    static func matches(_ host: String, _ name: String) -> Bool {
        if name.hasPrefix("*.") {
            guard let dot = host.firstIndex(of: ".") else { return false }
            return host[host.index(after: dot)...] == name.dropFirst(2)
        }
        return host == name
    }

    enum TLSConfigurationError: Error, CustomStringConvertible {
        case noCertificate
        var description: String { "websocket.tlsOpen is set but no certificate is configured" }
    }
}
