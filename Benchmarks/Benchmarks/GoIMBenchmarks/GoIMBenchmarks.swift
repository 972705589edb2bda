import Benchmark

// Micro-benchmarks (ordo-one/benchmark). Run from the repository root:
//   GOIM_BENCHMARKS=1 swift package --allow-writing-to-package-directory benchmark
// The table's "Malloc (total)" row counts every allocation of the process during one iteration. The fan-out
// benchmarks deliver to `FanoutRig.members` recipients per iteration: divide by that for allocations per delivered
// message (docs/benchmarks.md). Whole-system scenarios (real processes, loopback) are `goim-bench`'s.
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
