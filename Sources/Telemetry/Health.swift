import Primitives

/// One condition a service needs to do its work (`redis`, `nats`, `listeners`, `registry`): a name and a check that
/// says what is wrong, or nil when nothing is.
public struct HealthProbe: Sendable {
    public let name: String
    let check: @Sendable () async -> String?

    public init(_ name: String, check: @escaping @Sendable () async -> String?) {
        self.name = name
        self.check = check
    }

    /// Fine when `body` returns, its error's description otherwise (a Redis PING, a NATS flush).
    public static func roundTrip(_ name: String, _ body: @escaping @Sendable () async throws -> Void) -> HealthProbe {
        HealthProbe(name) {
            do {
                try await body()
                return nil
            } catch {
                return String(describing: error)
            }
        }
    }
}

/// What `/ready` answers: every probe's outcome, run concurrently, each bounded by a timeout so that a hung
/// dependency makes the service unready instead of hanging the probe.
public struct HealthReport: Sendable, Equatable {
    public struct Check: Sendable, Equatable {
        public var name: String
        /// nil when fine.
        public var problem: String?
    }

    public var checks: [Check]
    public var ready: Bool { checks.allSatisfy { $0.problem == nil } }

    public init(checks: [Check]) {
        self.checks = checks
    }

    public static func run(_ probes: [HealthProbe], timeout: Duration = .seconds(2)) async -> HealthReport {
        await withTaskGroup(of: (Int, String?).self) { group in
            for (index, probe) in probes.enumerated() {
                group.addTask {
                    await withTaskGroup(of: String??.self) { race in
                        race.addTask { .some(await probe.check()) }
                        race.addTask {
                            try? await Task.sleep(for: timeout)
                            return Task.isCancelled ? nil : .some("no answer within \(timeout)")
                        }
                        let first = await race.next() ?? nil
                        race.cancelAll()
                        return (index, first ?? nil)
                    }
                }
            }
            var problems = [String?](repeating: nil, count: probes.count)
            for await (index, problem) in group { problems[index] = problem }
            return HealthReport(checks: probes.indices.map { Check(name: probes[$0].name, problem: problems[$0]) })
        }
    }

    /// `{"status":"ok","redis":"ok","nats":"<what is wrong>"}`: the status, then one member per check.
    public var json: String {
        var members = [#""status":"\#(ready ? "ok" : "unavailable")""#]
        for check in checks { members.append("\(Self.quote(check.name)):\(Self.quote(check.problem ?? "ok"))") }
        return "{" + members.joined(separator: ",") + "}"
    }

    /// The liveness answer: the process serves requests.
    public static let aliveJSON = #"{"status":"ok"}"#

    static func quote(_ text: String) -> String { JSONText.quoted(text) }
}
