// swift-tools-version: 6.1
import PackageDescription

// swift-goim's micro-benchmarks (ordo-one/benchmark), a package of their own so the root package neither fetches
// nor compiles the benchmark library. Sources: Benchmarks/GoIMBenchmarks; static allocation thresholds: Thresholds/
// (scripts/check-allocations). Run from this folder: `swift package benchmark`.
// A path dependency's identity is its folder's name: swift-goim in a clone, something else in a worktree or CI.
let goim = Context.packageDirectory.split(separator: "/").dropLast().last.map { $0.lowercased() } ?? "swift-goim"

let package = Package(
    name: "swift-goim-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        // MallocInterposer alone: the default RuntimeInterposer trait needs a package this mirror does not carry.
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        .executableTarget(
            name: "GoIMBenchmarks",
            dependencies: [
                .product(name: "Comet", package: goim),
                .product(name: "GoIMProtocol", package: goim),
                .product(name: "GoIMRPC", package: goim),
                .product(name: "GoIMConfig", package: goim),
                .product(name: "LogicClient", package: goim),
                .product(name: "ServiceRuntime", package: goim),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/GoIMBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ],
    swiftLanguageModes: [.v6]
)
