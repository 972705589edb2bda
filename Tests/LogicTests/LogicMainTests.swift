import Foundation
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing

/// The `logic` executable: configuration errors, start-up with the shipped file's shape, graceful stop.
@Suite("logic executable", .startsServers)
struct LogicMainTests {
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestServers.builtProductPath("logic"))
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test("an invalid configuration is reported by field and exits 1")
    func badConfig() throws {
        let directory = try TestServers.temporaryDirectory("logic-config")
        let file = directory.appendingPathComponent("logic.toml")
        try "[redis]\nexpire = \"0s\"\n[auth]\nmode = \"magic\"\n".write(to: file, atomically: true, encoding: .utf8)
        let result = try Self.run(["--config", file.path])
        #expect(result.status == 1)
        #expect(result.output.contains("redis.expire"), "\(result.output)")
        #expect(result.output.contains("auth.mode"), "\(result.output)")
        // goim's run line: -conf=FILE plus its identity flags
        let missing = try Self.run([
            "-conf=\(directory.appendingPathComponent("nope.toml").path)", "-region=sh", "-zone=sh001", "-deploy.env=dev",
            "-weight=10",
        ])
        #expect(missing.status == 1)
        #expect(missing.output.contains("cannot read config file"), "\(missing.output)")
    }

    @Test("logic --config starts against Redis and NATS, serves HTTP, warns about unknown keys and stops on SIGTERM")
    func startAndStop() async throws {
        let redis = try await TestServers.redis()
        let nats = try await TestServers.nats(jetStream: true)
        defer {
            redis.stopInBackground()
            nats.stopInBackground()
        }
        let (httpPort, rpcPort) = (TestServers.freePort(), TestServers.freePort())
        let shipped = try String(contentsOfFile: Self.repositoryFile("configs/logic.toml"), encoding: .utf8)
        let config = shipped + "\n[typo]\nkey = 1\n"
        let directory = try TestServers.temporaryDirectory("logic-main")
        let file = directory.appendingPathComponent("logic.toml")
        try config.write(to: file, atomically: true, encoding: .utf8)
        let logic = try TestServers.executable(
            "logic", arguments: ["--config", file.path], port: httpPort,
            environment: [
                "GOIM_HTTPSERVER_ADDR": "127.0.0.1:\(httpPort)", "GOIM_RPCSERVER_ADDR": "127.0.0.1:\(rpcPort)",
                "GOIM_REDIS_ADDR": "127.0.0.1:\(redis.port)", "GOIM_NATS_URLS": "nats://127.0.0.1:\(nats.port)",
                "GOIM_NATS_STREAM": "MAINTEST",
            ])
        try await logic.start()
        defer { logic.stopInBackground() }
        try await TestClient.withClient(host: "127.0.0.1", port: httpPort) { client in
            var response = try await client.post("/goim/push/all?operation=1000", body: ByteBuffer(string: "hello"))
            for _ in 0..<100 where response.body.map({ String(buffer: $0) }) != #"{"code":0,"message":""}"# {
                try await Task.sleep(for: .milliseconds(100))  // NATS connects in the background
                response = try await client.post("/goim/push/all?operation=1000", body: ByteBuffer(string: "hello"))
            }
            #expect(response.body.map { String(buffer: $0) } == #"{"code":0,"message":""}"#)
        }
        #expect(ServerProcessProbe.canConnect(rpcPort))
        await logic.stop(signal: SIGTERM)
        #expect(logic.output.contains("unknown configuration key ignored"), "\(logic.output)")
        #expect(logic.output.contains("typo"))
        #expect(logic.output.contains("logic stopped"), "\(logic.output)")
    }

    static func repositoryFile(_ path: String) -> String {
        // Tests/LogicTests/LogicMainTests.swift → repository root
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(path).path
    }
}

enum ServerProcessProbe {
    static func canConnect(_ port: Int) -> Bool { ServerProcess.canConnect(port: port) }
}
