import Foundation
import NATS
import TestSupport
import Testing

/// The ways `[nats]` authenticates, each against a nats-server that requires it.
@Suite("NATS authentication and TLS", .startsServers)
struct NATSAuthTests {
    /// Connects with `configure`, publishes and receives one message; the error if it cannot.
    static func roundTrip(port: Int, scheme: String = "nats", _ configure: (inout NATSConfiguration) -> Void) async -> (any Error)? {
        var configuration = NATSConfiguration(urls: ["\(scheme)://127.0.0.1:\(port)"], maxReconnect: 0)
        configure(&configuration)
        do {
            let connection = try await NATSConnection.connect(configuration)
            let subscription = try await connection.subscribe("auth.test")
            try await connection.publish("auth.test", payload: Array("ok".utf8))
            let messages = await collect(subscription, count: 1)
            await connection.close()
            return messages.first?.payload == Array("ok".utf8) ? nil : TestFailure("no message came back")
        } catch {
            return error
        }
    }

    struct TestFailure: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    @Test("user and password: the right pair connects; none or a wrong one is refused")
    func userAndPassword() async throws {
        let server = try await TestServers.nats(jetStream: false, extraArguments: ["--user", "goim", "--pass", "s3cret"])
        try await server.withRunning { server in
            #expect(await Self.roundTrip(port: server.port) { $0.user = "goim"; $0.password = "s3cret" } == nil)
            #expect(await Self.roundTrip(port: server.port) { _ in } != nil)
            #expect(await Self.roundTrip(port: server.port) { $0.user = "goim"; $0.password = "wrong" } != nil)
        }
    }

    @Test("token: the right token connects; none or a wrong one is refused")
    func token() async throws {
        let server = try await TestServers.nats(jetStream: false, extraArguments: ["--auth", "t0ken"])
        try await server.withRunning { server in
            #expect(await Self.roundTrip(port: server.port) { $0.token = "t0ken" } == nil)
            #expect(await Self.roundTrip(port: server.port) { _ in } != nil)
            #expect(await Self.roundTrip(port: server.port) { $0.token = "other" } != nil)
        }
    }

    @Test("TLS: the server's certificate is verified against the configured CA; mutual TLS with a client certificate")
    func tls() async throws {
        let pki = try TestCertificates.make()
        let server = try await TestServers.nats(
            jetStream: false,
            extraArguments: [
                "--tls", "--tlscert", pki.serverCertificate, "--tlskey", pki.serverKey, "--tlsverify", "--tlscacert", pki.ca,
            ])
        try await server.withRunning { server in
            let client = NATSConfiguration.TLS(caFile: pki.ca, certificateFile: pki.clientCertificate, keyFile: pki.clientKey)
            #expect(await Self.roundTrip(port: server.port) { $0.tls = client } == nil)
            // A tls:// URL alone asks for TLS too (the CA still has to be given: the test CA is not in the system store).
            #expect(await Self.roundTrip(port: server.port, scheme: "tls") { $0.tls = client } == nil)
            // Without the client certificate the server refuses; without TLS the client cannot even speak to it.
            #expect(await Self.roundTrip(port: server.port) { $0.tls = .init(caFile: pki.ca) } != nil)
            #expect(await Self.roundTrip(port: server.port) { _ in } != nil)
            // A CA that did not sign the server's certificate: the client refuses the server.
            let other = try TestCertificates.make()
            #expect(
                await Self.roundTrip(port: server.port) {
                    $0.tls = .init(caFile: other.ca, certificateFile: pki.clientCertificate, keyFile: pki.clientKey)
                } != nil)
        }
    }

    @Test("operator mode (JWT): a .creds file of a user of a trusted account connects; none, or an unknown account's user, is refused")
    func credentialsFile() async throws {
        // What nsc would make: an operator, an account it signs, a user the account signs (NKeys.swift).
        let operatorKey = NKey(.operator)
        let account = NKey(.account)
        let user = NKey(.user)
        let directory = try TestServers.temporaryDirectory("nats-operator")
        let config = directory.appendingPathComponent("operator.conf")
        try Data(
            """
            operator: \(try NATSJWT.operator(operatorKey, name: "goim-test-operator"))
            resolver: MEMORY
            resolver_preload: {
              \(account.publicKey): \(try NATSJWT.account(account, issuer: operatorKey, name: "goim"))
            }

            """.utf8
        ).write(to: config)
        let credentials = try NATSJWT.writeCredentials(
            user: user, account: account, name: "goim-user", to: directory.appendingPathComponent("user.creds"))
        // The same user, its JWT signed by an account the server does not know.
        let unknownAccount = try NATSJWT.writeCredentials(
            user: user, account: NKey(.account), name: "goim-user", to: directory.appendingPathComponent("unknown.creds"))
        // The right JWT with another user's seed: the server's nonce is then signed by the wrong key.
        let wrongSeed = try NATSJWT.writeCredentials(
            user: user, account: account, name: "goim-user", seed: NKey(.user), to: directory.appendingPathComponent("seed.creds"))

        let server = try await TestServers.nats(jetStream: false, extraArguments: ["-c", config.path])
        try await server.withRunning { server in
            let connected = await Self.roundTrip(port: server.port) { $0.credentialsFile = credentials }
            #expect(connected == nil, "\(connected.map { "\($0)" } ?? "")\n\(server.output)")
            for refused in [
                await Self.roundTrip(port: server.port) { _ in },
                await Self.roundTrip(port: server.port) { $0.credentialsFile = unknownAccount },
                await Self.roundTrip(port: server.port) { $0.credentialsFile = wrongSeed },
            ] {
                let error = refused as? NATSError
                #expect(error?.code == .authFailed, "\(refused.map { "\($0)" } ?? "connected")")
                #expect(error?.message.contains("Authorization Violation") == true, "\(refused.map { "\($0)" } ?? "connected")")
            }
        }
    }
}

/// A throwaway CA with a server certificate for 127.0.0.1 and a client certificate, made with openssl.
struct TestCertificates {
    let ca: String
    let serverCertificate: String
    let serverKey: String
    let clientCertificate: String
    let clientKey: String

    static func make() throws -> TestCertificates {
        let directory = try TestServers.temporaryDirectory("pki")
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        func openssl(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try TestServers.locate("openssl"))
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw NATSAuthTests.TestFailure("openssl \(arguments.first ?? "") failed") }
        }
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=goim-test-ca",
                     "-keyout", path("ca.key"), "-out", path("ca.pem")])
        for (name, extensions) in [("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                                   ("client", "extendedKeyUsage=clientAuth")] {
            try extensions.write(toFile: path("\(name).ext"), atomically: true, encoding: .utf8)
            try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=goim-test-\(name)",
                         "-keyout", path("\(name).key"), "-out", path("\(name).csr")])
            try openssl(["x509", "-req", "-in", path("\(name).csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                         "-CAcreateserial", "-days", "2", "-extfile", path("\(name).ext"), "-out", path("\(name).pem")])
        }
        return TestCertificates(
            ca: path("ca.pem"), serverCertificate: path("server.pem"), serverKey: path("server.key"),
            clientCertificate: path("client.pem"), clientKey: path("client.key"))
    }
}
