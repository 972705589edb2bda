// swift-tools-version: 6.1
import PackageDescription

// Module map (docs/architecture.md has the picture):
//   GoIMProtocol     goim's binary packets, ops, framing, auth body, CityHash32
//   GoIMRPC          generated protobuf + gRPC for goim.protocol / goim.comet / goim.logic (+ swiftgoim.logic.LogicBatch)
//   Primitives       small concurrency and address primitives shared by every module
//   CHiredis/Redis   hiredis wrapped once: async Redis client on SwiftNIO
//   CNats/NATS       libnats wrapped once: async NATS + JetStream client
//   GoIMConfig       TOML + environment configuration of the three services
//   ServiceRuntime   what every service process is built from: a gRPC server as a Service, one ServiceGroup per process
//   RPCAuth          the shared secret of the internal gRPC ports: server and client interceptors
//   Registry         the cluster registry (comets in Redis with a TTL) that logic and job read
//   Telemetry        Prometheus metrics (swift-metrics + swift-prometheus), health probes, the monitor HTTP port
//   History          bounded room (and user) history in Redis: offsets, epochs, the reads recovery is made of
//   LogicClient      comet's client of logic: the gRPC calls and the batcher of Connect/Disconnect
//   Comet            connection serving: transports, channels, buckets/rooms, fan-out, the goim.comet.Comet service
//   Logic            auth, routing store, push HTTP API, online counts, nodes, NATS publishing
//   Job              NATS consumer, room batching, delivery to comets
//   CometMain, LogicMain, JobMain   thin executables `comet`, `logic`, `job`
//   GoIMClient       goim connections (TCP, WebSocket, WSS): tests, goim-bench, and GoIMKit's transport
//   GoIMKit          the Swift client SDK: a session that reconnects, heartbeats and recovers; goim-tail on it
//   Bench            `goim-bench`: load clients, pushers, fan-out scenarios, GoIMKit's reconnect storm
//   TestSupport      starts real redis-server / nats-server processes and the built executables for tests
//   TestLogic        a recording goim.logic.Logic gRPC service for comet and logic-client tests
// The micro-benchmarks are a package of their own: Benchmarks/Package.swift.

let nio: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let grpcCore: Target.Dependency = .product(name: "GRPCCore", package: "grpc-swift-2")
let grpcHTTP2: Target.Dependency = .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")

let targets: [Target] = [
    .target(name: "GoIMProtocol", dependencies: [nio]),
    .target(name: "Primitives", dependencies: [nio]),
    // libFuzzer harness; scripts/fuzz-protocol builds it with --sanitize=fuzzer (a plain build links a no-op).
    .executableTarget(name: "FuzzProtocol", dependencies: ["GoIMProtocol", nio]),
    .target(
        name: "GoIMRPC",
        dependencies: [
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        ]
    ),
    .systemLibrary(
        name: "CHiredis",
        pkgConfig: "hiredis",
        providers: [.apt(["libhiredis-dev"])]
    ),
    .target(name: "Redis", dependencies: ["CHiredis", nio, nioPosix, logging, lifecycle]),
    .systemLibrary(
        name: "CNats",
        pkgConfig: "libnats",
        providers: [.apt(["libnats-dev"])]
    ),
    .target(name: "NATS", dependencies: ["CNats", "Primitives", nio, nioPosix, logging, lifecycle]),
    .target(name: "GoIMConfig", dependencies: ["Primitives", .product(name: "TOMLKit", package: "TOMLKit"), logging]),
    .target(
        name: "ServiceRuntime",
        dependencies: ["GoIMConfig", "NATS", "Primitives", "Redis", nio, nioPosix, logging, lifecycle, grpcCore, grpcHTTP2, argumentParser]
    ),
    .target(name: "TestSupport", dependencies: ["Primitives"]),
    .target(
        name: "Telemetry",
        dependencies: [
            "Primitives", nio, logging, lifecycle, grpcCore,
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]
    ),
    .target(
        name: "TestLogic",
        dependencies: ["GoIMProtocol", "GoIMRPC", grpcCore],
        path: "Tests/TestLogic"
    ),
    .target(
        name: "GoIMClient",
        dependencies: [
            "GoIMProtocol", nio, nioPosix,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]
    ),
    // The Swift client SDK (docs/sdk-swift.md): a session that reconnects, heartbeats and recovers, on GoIMClient.
    .target(
        name: "GoIMKit",
        dependencies: ["GoIMClient", "GoIMProtocol", nio, nioPosix, .product(name: "NIOSSL", package: "swift-nio-ssl")]
    ),
    .executableTarget(name: "GoIMTail", dependencies: ["GoIMKit", "GoIMProtocol", argumentParser]),
    .target(name: "RPCAuth", dependencies: ["Primitives", grpcCore, logging]),
    .target(name: "Registry", dependencies: ["Redis", "GoIMConfig", "Primitives", nio, logging, lifecycle]),
    .target(name: "History", dependencies: ["Redis", "GoIMConfig", nio]),
    .target(
        name: "LogicClient",
        dependencies: ["GoIMRPC", "GoIMConfig", "Primitives", "RPCAuth", nio, nioPosix, logging, lifecycle, grpcCore, grpcHTTP2]
    ),
    .target(
        name: "Comet",
        dependencies: [
            "GoIMProtocol", "GoIMRPC", "GoIMConfig", "LogicClient", "Primitives", "RPCAuth", "Registry", "Redis", "ServiceRuntime",
            "Telemetry", nio, nioPosix, logging, lifecycle, grpcCore, grpcHTTP2,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOExtras", package: "swift-nio-extras"),
            .product(name: "Atomics", package: "swift-atomics"),
        ]
    ),
    .target(
        name: "Logic",
        dependencies: [
            "GoIMProtocol", "GoIMRPC", "GoIMConfig", "History", "Primitives", "RPCAuth", "Registry", "Redis", "NATS", "ServiceRuntime",
            "Telemetry", nio, nioPosix, logging, lifecycle, grpcCore, grpcHTTP2,
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "JWTKit", package: "jwt-kit"),
        ]
    ),
    .target(
        name: "Job",
        dependencies: [
            "GoIMProtocol", "GoIMRPC", "GoIMConfig", "History", "Primitives", "RPCAuth", "Registry", "Redis", "NATS", "ServiceRuntime",
            "Telemetry", nio,
            nioPosix, logging, lifecycle, grpcCore, grpcHTTP2,
        ]
    ),
    .executableTarget(
        name: "CometMain",
        dependencies: ["Comet", "GoIMConfig", "ServiceRuntime", "Telemetry", argumentParser, logging, .product(name: "Metrics", package: "swift-metrics")]
    ),
    .executableTarget(
        name: "LogicMain",
        dependencies: ["Logic", "GoIMConfig", "ServiceRuntime", "Telemetry", argumentParser, logging, .product(name: "Metrics", package: "swift-metrics")]
    ),
    .executableTarget(
        name: "Bench",
        dependencies: [
            "GoIMClient", "GoIMKit", "GoIMProtocol", "GoIMRPC", nio, nioPosix, grpcCore, grpcHTTP2, argumentParser,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]
    ),
    .executableTarget(
        name: "JobMain",
        dependencies: ["Job", "GoIMConfig", "ServiceRuntime", "Telemetry", argumentParser, logging, .product(name: "Metrics", package: "swift-metrics")]
    ),

    .testTarget(
        name: "GoIMProtocolTests",
        dependencies: ["GoIMProtocol", .product(name: "NIOTestUtils", package: "swift-nio"), nio]
    ),
    .testTarget(
        name: "GoIMRPCTests",
        dependencies: ["GoIMRPC", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
    ),
    .testTarget(name: "PrimitivesTests", dependencies: ["Primitives"]),
    .testTarget(name: "GoIMKitTests", dependencies: ["GoIMKit", "GoIMProtocol", "TestSupport", nio, nioPosix]),
    .testTarget(
        name: "TelemetryTests",
        dependencies: ["Telemetry", .product(name: "HummingbirdTesting", package: "hummingbird")]
    ),
    .testTarget(name: "RPCAuthTests", dependencies: ["RPCAuth", "GoIMRPC", grpcCore, grpcHTTP2, logging]),
    .testTarget(
        name: "ServiceRuntimeTests",
        dependencies: ["ServiceRuntime", "GoIMConfig", "GoIMRPC", nio, nioPosix, logging, lifecycle, grpcCore, grpcHTTP2]
    ),
    .testTarget(
        name: "LogicClientTests",
        dependencies: ["LogicClient", "TestLogic", "TestSupport", "GoIMConfig", "GoIMProtocol", "GoIMRPC", nioPosix, logging, grpcCore, grpcHTTP2]
    ),
    .testTarget(name: "RedisTests", dependencies: ["Redis", "TestSupport", nio, nioPosix]),
    .testTarget(
        name: "NATSTests",
        dependencies: ["NATS", "TestSupport", logging, .product(name: "Crypto", package: "swift-crypto")]
    ),
    .testTarget(name: "GoIMConfigTests", dependencies: ["GoIMConfig"]),
    .testTarget(name: "HistoryTests", dependencies: ["History", "Redis", "GoIMConfig", "TestSupport", nio]),
    .testTarget(name: "RegistryTests", dependencies: ["Registry", "Redis", "GoIMConfig", "TestSupport"]),
    .testTarget(
        name: "CometTests",
        dependencies: [
            "Comet", "GoIMClient", "GoIMProtocol", "GoIMRPC", "GoIMConfig", "LogicClient", "RPCAuth", "Registry", "Redis",
            "ServiceRuntime", "TestLogic", "TestSupport", nio, nioPosix, grpcCore, grpcHTTP2,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]
    ),
    .testTarget(
        name: "LogicTests",
        dependencies: [
            "Logic", "History", "GoIMProtocol", "GoIMRPC", "GoIMConfig", "Registry", "Redis", "NATS", "RPCAuth", "ServiceRuntime", "TestSupport",
            nio, nioPosix, grpcCore, grpcHTTP2,
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "JWTKit", package: "jwt-kit"),
        ]
    ),
    .testTarget(
        name: "JobTests",
        dependencies: [
            "Job", "Comet", "GoIMClient", "GoIMProtocol", "GoIMRPC", "GoIMConfig", "LogicClient", "Registry", "Redis",
            "NATS", "ServiceRuntime", "TestSupport", nio, nioPosix, grpcCore, grpcHTTP2,
        ]
    ),
    // A whole cluster of the built executables as separate processes, with goim clients: shared by StackTests and
    // FaultTests.
    .target(
        name: "StackHarness",
        dependencies: [
            "GoIMClient", "GoIMProtocol", "TestSupport", nio,
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ],
        path: "Tests/StackHarness"
    ),
    // The executables as separate processes, end to end (with goim clients against them).
    .testTarget(
        name: "StackTests",
        dependencies: [
            "GoIMClient", "GoIMKit", "GoIMProtocol", "StackHarness", "TestSupport", nio, nioPosix,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "JWTKit", package: "jwt-kit"),
        ]
    ),
    // Faults injected into a running cluster (processes killed, stopped, restarted), with a delivery checker.
    .testTarget(
        name: "FaultTests",
        dependencies: ["GoIMClient", "GoIMProtocol", "StackHarness", "TestSupport", nio]
    ),
]

let products: [Product] = [
    .executable(name: "comet", targets: ["CometMain"]),
    .executable(name: "logic", targets: ["LogicMain"]),
    .executable(name: "job", targets: ["JobMain"]),
    .executable(name: "goim-bench", targets: ["Bench"]),
    .executable(name: "goim-tail", targets: ["GoIMTail"]),
    .library(name: "GoIMKit", targets: ["GoIMKit"]),
    // For the micro-benchmark package (Benchmarks/) and for embedding a comet in another process.
    .library(name: "Comet", targets: ["Comet"]),
    .library(name: "LogicClient", targets: ["LogicClient"]),
    .library(name: "GoIMProtocol", targets: ["GoIMProtocol"]),
    .library(name: "GoIMRPC", targets: ["GoIMRPC"]),
    .library(name: "GoIMConfig", targets: ["GoIMConfig"]),
    .library(name: "ServiceRuntime", targets: ["ServiceRuntime"]),
]

let package = Package(
    name: "swift-goim",
    platforms: [.macOS(.v15)],
    products: products,
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        // Ed25519 for the NKeys and JWTs of NATSTests' operator-mode test (jwt-kit depends on it already).
        .package(url: "https://github.com/apple/swift-crypto.git", "4.1.0"..<"6.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: targets,
    swiftLanguageModes: [.v6]
)
