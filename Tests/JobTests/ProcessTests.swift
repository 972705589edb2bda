import Foundation
import GoIMRPC
import Testing
import TestSupport

@testable import Job

/// The `job` executable as a separate process.
@Suite("job process", .serialized, .startsServers)
struct JobProcessTests {
    /// A config file for the `job` process on the harness's servers.
    func writeConfig(_ harness: JobHarness) throws -> String {
        let directory = try TestServers.temporaryDirectory("job-config")
        let path = directory.appendingPathComponent("job.toml").path
        let toml = """
            [env]
            host = "job-process"
            [log]
            level = "info"
            [consumer]
            durable = "goim-job"
            ackWait = "2s"
            [comet]
            timeout = "2s"
            backoff = "20ms"
            maxBackoff = "200ms"
            [redis]
            addr = "127.0.0.1:\(harness.redisServer.port)"
            [nats]
            urls = ["nats://127.0.0.1:\(harness.nats.port)"]
            maxAge = "1h"
            maxBytes = \(64 << 20)
            [registry]
            refresh = "400ms"
            ttl = "30s"
            [monitor]
            addr = "127.0.0.1:\(TestServers.freePort())"
            """
        try toml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("A job killed (SIGKILL) mid-stream and restarted delivers everything published meanwhile")
    func killAndRestart() async throws {
        let harness = try await JobHarness.start()
        defer { Task { await harness.stop() } }
        let comet = try await harness.addComet("comet-a")
        comet.recorder.setLatency(.milliseconds(5))
        let config = try writeConfig(harness)
        // The job listens on no port: the NATS port is given so that start() returns once launched.
        let job = try TestServers.executable("job", arguments: ["--config", config], port: harness.nats.port)
        try await job.start()
        defer { job.stopInBackground() }

        var sent: [String] = []
        for index in 0..<100 {
            let body = "m\(index)"
            sent.append(body)
            try await harness.publishRoom("live://\(index % 4)", body)
        }
        #expect(await comet.recorder.wait { Set($0.allMessages).count >= 20 }, "job output:\n\(job.output)")
        await job.kill9()
        for index in 100..<200 {
            let body = "m\(index)"
            sent.append(body)
            try await harness.publishRoom("live://\(index % 4)", body)
        }
        try await job.start()
        #expect(
            await comet.recorder.wait(timeout: .seconds(20)) { Set($0.allMessages).isSuperset(of: sent) },
            "missing: \(Set(sent).subtracting(comet.recorder.allMessages).count); job output:\n\(job.output)")
        await job.stop()  // SIGTERM: graceful
        #expect(job.output.contains("job stopped"), "no graceful exit on SIGTERM:\n\(job.output)")
        #expect(!job.output.contains("Fatal error"))
    }

    @Test("A bad configuration is reported with the field and a non-zero exit status")
    func badConfiguration() async throws {
        let directory = try TestServers.temporaryDirectory("job-config")
        let path = directory.appendingPathComponent("job.toml").path
        try "[room]\nbatch = 0\ntargets = \"some\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestServers.builtProductPath("job"))
        process.arguments = ["-conf", path]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(output.contains("room.batch"))
        #expect(output.contains("room.targets"))
    }
}
