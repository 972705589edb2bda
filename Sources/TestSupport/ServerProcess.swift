import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from starting the real servers tests run against.
public enum TestServerError: Error, CustomStringConvertible {
    case executableNotFound(String, searched: [String])
    case didNotStart(String, port: Int, output: String)

    public var description: String {
        switch self {
        case .executableNotFound(let name, let searched):
            return "\(name) not found (searched \(searched.joined(separator: ", "))); install it with apt-get"
        case .didNotStart(let name, let port, let output):
            return "\(name) did not answer on its port \(port) in time; its output:\n\(output)"
        }
    }
}

/// Children still running when the test process exits are killed by an `atexit` handler. Tests that stop their
/// servers from an unstructured `Task` (a `defer` cannot await) may not get to run it before the process ends;
/// without this, their redis-server and nats-server processes outlived the test run.
enum LiveChildren {
    private static let pids = Mutex<Set<pid_t>>([])
    private static let registered: Void = {
        atexit {
            LiveChildren.pids.withLock { pids in
                // Only our own children: a child that exited by itself may have had its pid reused.
                for pid in pids where LiveChildren.parent(of: pid) == getpid() { kill(pid, SIGKILL) }
                pids.removeAll()
            }
        }
    }()

    static func add(_ pid: pid_t) {
        _ = registered
        pids.withLock { _ = $0.insert(pid) }
    }

    static func remove(_ pid: pid_t) {
        pids.withLock { _ = $0.remove(pid) }
    }

    /// The parent pid from /proc/<pid>/stat (the field after the parenthesised command name and the state). Without
    /// /proc (Darwin): our pid when `pid` is a child of ours still running (`waitpid` with `WNOHANG` gives 0), else nil.
    static func parent(of pid: pid_t) -> pid_t? {
        #if !os(Linux)
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0 ? getpid() : nil
        #else
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? pid_t(fields[1]) : nil
        #endif
    }
}

/// A real server process (redis-server, nats-server, or one of the project's executables) on a loopback
/// port, in its own temporary directory. `stop()` is idempotent; `deinit` kills a forgotten process so a
/// failing test does not leak servers.
public final class ServerProcess: @unchecked Sendable {
    // @unchecked Sendable: the mutable `process` is only touched under `lock`.
    public let name: String
    public let port: Int
    /// The address `start()` waits on: 127.0.0.1, or the process's own address in a test's network namespace.
    public let host: String
    public let directory: URL
    private let executable: String
    private let arguments: [String]
    private let environment: [String: String]?
    private let lock = NSLock()
    private var process: Process?
    private let logURL: URL

    init(
        name: String, executable: String, arguments: [String], port: Int, host: String = "127.0.0.1", directory: URL,
        environment: [String: String]? = nil
    ) {
        self.name = name
        self.host = host
        self.executable = executable
        self.arguments = arguments
        self.port = port
        self.directory = directory
        self.environment = environment
        self.logURL = directory.appendingPathComponent("\(name).log")
    }

    deinit {
        if let process {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            LiveChildren.remove(process.processIdentifier)
        }
    }

    public var pid: Int32? {
        lock.withLock { process?.isRunning == true ? process?.processIdentifier : nil }
    }

    /// Everything the process printed so far.
    public var output: String {
        (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
    }

    /// Starts the process and waits until its port accepts connections.
    public func start(timeout: Duration = .seconds(15)) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        if !FileManager.default.fileExists(atPath: logURL.path) {
            _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        }
        let log = try FileHandle(forWritingTo: logURL)
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try Self.runWithSignalsUnblocked(process)
        lock.withLock { self.process = process }
        LiveChildren.add(process.processIdentifier)

        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !process.isRunning { break }
            if Self.canConnect(host: host, port: port) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        await stop()
        throw TestServerError.didNotStart(name, port: port, output: output)
    }

    /// Sends `signal` (SIGTERM by default) and waits for the process to exit, escalating to SIGKILL after a grace
    /// period. Waits by sleeping, never by blocking a thread: the cooperative pool has as many threads as cores (two
    /// on CI), and a test blocked in a stop would starve every other test's async work, in-process servers included.
    public func stop(signal: Int32 = SIGTERM) async {
        guard let process = takeRunning(signal: signal) else { return }
        // A graceful shutdown (job draining to NATS, comet disconnecting clients) can take a while on a loaded machine.
        let deadline = ContinuousClock.now + (signal == SIGKILL ? .seconds(10) : .seconds(30))
        while process.isRunning && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        while process.isRunning && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
        LiveChildren.remove(process.processIdentifier)
    }

    /// For `defer` blocks, which cannot await: sends SIGTERM now; a thread of its own waits for the exit and sends
    /// SIGKILL after the grace period. Idempotent, like `stop()`.
    public func stopInBackground() {
        guard let process = takeRunning(signal: SIGTERM) else { return }
        let thread = Thread {
            let deadline = Date().addingTimeInterval(30)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            while process.isRunning { usleep(10_000) }
            LiveChildren.remove(process.processIdentifier)
        }
        thread.start()
    }

    /// Forgets the process and sends it `signal`; nil when there was none or it had exited already.
    private func takeRunning(signal: Int32) -> Process? {
        let process = lock.withLock { () -> Process? in
            defer { self.process = nil }
            return self.process
        }
        guard let process else { return nil }
        guard process.isRunning else {
            LiveChildren.remove(process.processIdentifier)
            return nil
        }
        kill(process.processIdentifier, signal)
        return process
    }

    /// Foundation's `Process` spawns the child with the calling thread's signal mask, and the threads Swift
    /// concurrency runs on block nearly every signal: the server would then ignore SIGTERM (so `stop()` waited its
    /// full 10 s and fell back to SIGKILL). Spawn with nothing blocked. Synchronous, so the thread cannot change
    /// between setting and restoring the mask.
    private static func runWithSignalsUnblocked(_ process: Process) throws {
        var none = sigset_t()
        var previous = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        try process.run()
    }

    /// Kills the process without letting it clean up (as a crash would).
    public func kill9() async { await stop(signal: SIGKILL) }

    /// Stops and starts again on the same port and directory (data kept).
    public func restart() async throws {
        await stop()
        try await start()
    }

    /// True when something accepts TCP connections on `host`:`port`.
    public static func canConnect(host: String = "127.0.0.1", port: Int) -> Bool {
        guard let descriptor = try? LoopbackSocket.connect(host: host, port: port) else { return false }
        close(descriptor)
        return true
    }
}

public enum TestServers {
    /// A loopback TCP port that was free a moment ago (bound to port 0 and released).
    public static func freePort() -> Int {
        // Tests run in parallel: never hand out the same port twice in one process, or two servers
        // (or a server and a client's listener) could race for it.
        while true {
            let port = kernelFreePort()
            let fresh = handedOut.withLock { ports in ports.insert(port).inserted }
            if fresh { return port }
        }
    }

    private static let handedOut = NIOLockedPorts()

    /// The kernel's ephemeral range (outgoing connections and port-0 binds take their local ports from it).
    private static let ephemeralLow: Int = {
        #if !os(Linux)
        return 49152  // Darwin's default net.inet.ip.portrange.first
        #else
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
            let low = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap({ Int($0) })
        else { return 32768 }
        return low
        #endif
    }()

    /// A port that is free now, taken below the ephemeral range when there is room: a port the kernel hands out
    /// for port 0 can be taken a moment later as the local port of some test's outgoing connection, before the
    /// server process it was meant for binds it ("Address already in use", seen under parallel tests).
    private static func kernelFreePort() -> Int {
        if ephemeralLow > 12_000 {
            for _ in 0..<200 {
                let port = Int.random(in: 10_000..<ephemeralLow)
                if canBind(port) { return port }
            }
        }
        return bindPort(0)!
    }

    private static func canBind(_ port: Int) -> Bool { bindPort(port) != nil }

    /// Binds a TCP socket to 127.0.0.1:`port` (0: any), closes it and returns the port, or nil when taken.
    private static func bindPort(_ port: Int) -> Int? {
        let fd = socket(AF_INET, streamSocketType, 0)
        precondition(fd >= 0, "socket() failed")
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            precondition(port != 0, "bind to 127.0.0.1:0 failed")
            return nil
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A new empty temporary directory.
    public static func temporaryDirectory(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// The path of `name` from PATH or the usual Debian locations.
    public static func locate(_ name: String) throws -> String {
        var searched = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        searched += ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
        for directory in searched {
            let path = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw TestServerError.executableNotFound(name, searched: searched)
    }

    /// Starts `redis-server` on a free loopback port, persistence off, in a temporary directory. `host` and
    /// `launcher` (e.g. `ip netns exec NS`) run it on another address in a network namespace.
    public static func redis(password: String? = nil, host: String = "127.0.0.1", launcher: [String] = []) async throws -> ServerProcess {
        let port = freePort()
        let directory = try temporaryDirectory("redis")
        var arguments = [
            "--port", "\(port)", "--bind", host, "--save", "", "--appendonly", "no",
            "--dir", directory.path, "--daemonize", "no", "--protected-mode", "no",
        ]
        if let password { arguments += ["--requirepass", password] }
        let (executable, prefix) = try launched(launcher, "redis-server")
        let server = ServerProcess(
            name: "redis-server", executable: executable, arguments: prefix + arguments, port: port, host: host,
            directory: directory)
        try await server.start()
        return server
    }

    /// Starts `nats-server` with JetStream on a free loopback port; its store lives in a temporary
    /// directory so that a restart keeps streams and consumers. `extraArguments` go to nats-server as they are
    /// (authentication, TLS).
    public static func nats(
        jetStream: Bool = true, extraArguments: [String] = [], host: String = "127.0.0.1", launcher: [String] = []
    ) async throws -> ServerProcess {
        let port = freePort()
        let directory = try temporaryDirectory("nats")
        var arguments = ["-a", host, "-p", "\(port)"] + extraArguments
        if jetStream { arguments += ["-js", "-sd", directory.appendingPathComponent("js").path] }
        let (executable, prefix) = try launched(launcher, "nats-server")
        let server = ServerProcess(
            name: "nats-server", executable: executable, arguments: prefix + arguments, port: port, host: host,
            directory: directory)
        try await server.start()
        return server
    }

    /// Runs one of this package's built executables (e.g. "comet") as a separate process; with `launcher` (e.g.
    /// `ip netns exec NS`) through it, answering on `host`.
    public static func executable(
        _ name: String, arguments: [String], port: Int, environment: [String: String]? = nil, host: String = "127.0.0.1",
        launcher: [String] = []
    ) throws -> ServerProcess {
        let directory = try temporaryDirectory(name)
        let path = try builtProductPath(name)
        let (executable, prefix) = launcher.isEmpty ? (path, []) : (launcher[0], Array(launcher.dropFirst()) + [path])
        return ServerProcess(
            name: name, executable: executable, arguments: prefix + arguments, port: port, host: host,
            directory: directory, environment: environment)
    }

    /// The executable and leading arguments that run program `name` (found on PATH) through `launcher`, if any.
    /// `ip netns exec` execs the program in place: the pid a test signals is the program's.
    static func launched(_ launcher: [String], _ name: String) throws -> (String, [String]) {
        let path = try locate(name)
        guard let first = launcher.first else { return (path, []) }
        return (first, Array(launcher.dropFirst()) + [path])
    }

    /// Runs any program (e.g. `python3`, `chromium`) as a separate process in its own temporary directory;
    /// `start()` returns once something accepts connections on `port`.
    public static func program(
        _ name: String, path: String, arguments: [String], port: Int, environment: [String: String]? = nil
    ) throws -> ServerProcess {
        let directory = try temporaryDirectory(name)
        return ServerProcess(
            name: name, executable: path, arguments: arguments, port: port, directory: directory,
            environment: environment)
    }

    /// Where `swift build` put executable `name`: beside the test bundle.
    public static func builtProductPath(_ name: String) throws -> String {
        let bundle = Bundle.main.bundleURL
        var candidates: [URL] = [bundle.deletingLastPathComponent().appendingPathComponent(name)]
        for directory in [bundle, bundle.deletingLastPathComponent()] {
            candidates.append(directory.appendingPathComponent(name))
        }
        let argv0 = URL(fileURLWithPath: CommandLine.arguments.first ?? "")
        candidates.append(argv0.deletingLastPathComponent().appendingPathComponent(name))
        candidates.append(argv0.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(name))
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate.path) {
            return candidate.path
        }
        throw TestServerError.executableNotFound(name, searched: candidates.map(\.path))
    }
}

extension ServerProcess {
    /// Runs `body` and stops the server afterwards, whatever happens.
    public func withRunning<T>(_ body: (ServerProcess) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            await stop()
            return result
        } catch {
            await stop()
            throw error
        }
    }
}

/// The ports `freePort()` returned so far in this process.
final class NIOLockedPorts: @unchecked Sendable {
    // @unchecked Sendable: `ports` is only touched under `lock`.
    private let lock = NSLock()
    private var ports: Set<Int> = []

    func withLock<T>(_ body: (inout Set<Int>) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&ports)
    }
}

#if canImport(Glibc)
private let streamSocketType = Int32(SOCK_STREAM.rawValue)
#else
private let streamSocketType = SOCK_STREAM
#endif
