import GoIMConfig
import NATS

extension NATSConfiguration {
    /// The client settings of `[nats]`, as logic and job both connect.
    public init(_ section: NATSSection, clientName: String) {
        func nonEmpty(_ text: String) -> String? { text.isEmpty ? nil : text }
        let secure = section.tls || section.urls.contains { $0.lowercased().hasPrefix("tls://") }
        self.init(
            urls: section.urls, name: clientName, connectTimeout: section.connectTimeout,
            user: nonEmpty(section.user), password: nonEmpty(section.password), token: nonEmpty(section.token),
            credentialsFile: nonEmpty(section.credentialsFile),
            tls: secure
                ? TLS(caFile: nonEmpty(section.tlsCAFile), certificateFile: nonEmpty(section.tlsCertFile),
                      keyFile: nonEmpty(section.tlsKeyFile))
                : nil)
    }
}

extension StreamConfiguration {
    /// The push stream of `[nats]`, as logic creates it and job expects it: `<subject>.>` on file storage, kept for
    /// `maxAge` / `maxBytes`, with the configured replicas and duplicate window.
    public init(_ nats: NATSSection) {
        self.init(
            name: nats.stream, subjects: [nats.subject + ".>"], storage: .file, maxAge: nats.maxAge,
            maxBytes: Int64(nats.maxBytes), replicas: nats.replicas, duplicateWindow: nats.duplicateWindow)
    }
}
