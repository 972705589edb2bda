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
