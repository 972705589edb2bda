import Benchmark

// Micro-benchmarks (ordo-one/benchmark). Run from the Benchmarks folder: `swift package benchmark`.
// The table's "Malloc (total)" row counts every allocation of the process during one iteration. The fan-out
// benchmarks deliver to `FanoutRig.members` recipients per iteration: divide by that for allocations per delivered
// message (docs/benchmarks.md). Whole-system scenarios (real processes, loopback) are `goim-bench`'s.
// CI checks only allocation counts (scripts/check-allocations: Thresholds/*.p90.json, the same on any machine: fixed event loops);
// times depend on the machine and are never checked.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )
    protocolBenchmarks()
    fanoutBenchmarks()
}

/// Tolerance of the allocation check, in allocations per measured iteration (for `.kilo` benchmarks an iteration is
/// 1,000 operations, so one more allocation per operation is +1,000). Nothing else is checked.
func allocationTolerance(_ allocations: Int) -> [BenchmarkMetric: BenchmarkThresholds] {
    [.mallocCountTotal: .init(absolute: [.p90: allocations])]
}

