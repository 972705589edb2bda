// swift-tools-version: 6.1
import PackageDescription

// Module map (see README "Layout"):
//   GoIMProtocol   goim's binary packets, ops, framing, auth body, CityHash32
//   GoIMRPC        generated protobuf + gRPC for goim.protocol / goim.comet / goim.logic
//   CHiredis/Redis hiredis wrapped once: async Redis client on SwiftNIO
//   CNats/NATS     libnats wrapped once: async NATS + JetStream client
//   GoIMConfig     TOML + environment configuration shared by the services
//   GoIMClient     goim clients (TCP, WebSocket, WSS) used by tests and goim-bench
//   Registry       the cluster registry (comets in Redis with a TTL) that logic and job read
//   Comet          the connection server: transports, channels, buckets/rooms, fan-out, gRPC service
//   Logic          auth, routing store, push HTTP API, online counts, nodes, NATS publishing
//   Job            NATS consumer, room batching, delivery to comets
//   CometMain, LogicMain, JobMain   thin executables `comet`, `logic`, `job`
//   Bench          `goim-bench`: load clients, pushers, fan-out scenarios
//   TestSupport    starts real redis-server / nats-server processes for tests

let nio: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let grpcCore: Target.Dependency = .product(name: "GRPCCore", package: "grpc-swift-2")
let grpcHTTP2: Target.Dependency = .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")

var targets: [Target] = [
    .target(name: "GoIMProtocol", dependencies: [nio]),
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
    .target(name: "NATS", dependencies: ["CNats", nio, nioPosix, logging, lifecycle]),
    .target(name: "GoIMConfig", dependencies: [.product(name: "TOMLKit", package: "TOMLKit"), logging]),
    .target(name: "TestSupport"),
    .target(
        name: "GoIMClient",
        dependencies: [
            "GoIMProtocol", nio, nioPosix,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]
    ),
    .target(name: "Registry", dependencies: ["Redis", "GoIMConfig", nio, logging, lifecycle]),
    .target(
        name: "Comet",
        dependencies: [
            "GoIMProtocol", "GoIMRPC", "GoIMConfig", "Registry", "Redis", nio, nioPosix, logging, lifecycle,
            grpcCore, grpcHTTP2,
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
            "GoIMProtocol", "GoIMRPC", "GoIMConfig", "Registry", "Redis", "NATS", nio, nioPosix, logging, lifecycle,
            grpcCore, grpcHTTP2,
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "JWTKit", package: "jwt-kit"),
        ]
    ),
    .target(
        name: "Job",
        dependencies: [
            "GoIMProtocol", "GoIMRPC", "GoIMConfig", "Registry", "Redis", "NATS", nio, nioPosix, logging, lifecycle,
            grpcCore, grpcHTTP2,
        ]
    ),
    .executableTarget(name: "CometMain", dependencies: ["Comet", "GoIMConfig", argumentParser, logging, lifecycle]),
    .executableTarget(name: "LogicMain", dependencies: ["Logic", "GoIMConfig", argumentParser, logging, lifecycle]),
    .executableTarget(
        name: "Bench",
        dependencies: [
            "GoIMClient", "GoIMProtocol", "GoIMRPC", nio, nioPosix, grpcCore, grpcHTTP2, argumentParser,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]
    ),
    .executableTarget(name: "JobMain", dependencies: ["Job", "GoIMConfig", argumentParser, logging, lifecycle]),

    .testTarget(
        name: "GoIMProtocolTests",
        dependencies: ["GoIMProtocol", .product(name: "NIOTestUtils", package: "swift-nio"), nio]
    ),
    .testTarget(
        name: "GoIMRPCTests",
        dependencies: ["GoIMRPC", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
    ),
    .testTarget(name: "RedisTests", dependencies: ["Redis", "TestSupport", nio, nioPosix]),
    .testTarget(name: "NATSTests", dependencies: ["NATS", "TestSupport", logging]),
    .testTarget(name: "GoIMConfigTests", dependencies: ["GoIMConfig"]),
    .testTarget(name: "RegistryTests", dependencies: ["Registry", "Redis", "GoIMConfig", "TestSupport"]),
    .testTarget(
        name: "CometTests",
        dependencies: [
            "Comet", "GoIMClient", "GoIMProtocol", "GoIMRPC", "GoIMConfig", "Registry", "Redis", "TestSupport", nio, nioPosix,
            grpcCore, grpcHTTP2,
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]
    ),
    .testTarget(
        name: "LogicTests",
        dependencies: [
            "Logic", "GoIMProtocol", "GoIMRPC", "GoIMConfig", "Registry", "Redis", "NATS", "TestSupport", nio, nioPosix,
            grpcCore, grpcHTTP2,
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "JWTKit", package: "jwt-kit"),
        ]
    ),
    .testTarget(
        name: "JobTests",
        dependencies: [
            "Job", "GoIMProtocol", "GoIMRPC", "GoIMConfig", "Registry", "Redis", "NATS", "TestSupport", nio, nioPosix,
            grpcCore, grpcHTTP2,
        ]
    ),
]

// Development aid: GOIM_ONLY=Redis,NATS limits the package to those modules, their test targets
// and TestSupport, so one module can be built and tested while others are being edited.
if let only = Context.environment["GOIM_ONLY"], !only.isEmpty {
    let keep = Set(only.split(separator: ",").map(String.init))
    targets = targets.filter { target in
        let base = target.name.hasSuffix("Tests") ? String(target.name.dropLast(5)) : target.name
        return keep.contains(base) || target.name == "TestSupport" || target.type == .system
    }
}

// JobTests run real comets in-process (and goim clients against them) whenever Comet is part of the build.
if let jobTests = targets.first(where: { $0.name == "JobTests" }),
    targets.contains(where: { $0.name == "Comet" }), targets.contains(where: { $0.name == "GoIMClient" })
{
    jobTests.dependencies += ["Comet", "GoIMClient"]
    jobTests.swiftSettings = (jobTests.swiftSettings ?? []) + [.define("JOB_REAL_COMET")]
}

// StackTests run the built comet, logic and job executables as separate processes (with goim clients against them):
// only when the whole stack is part of the build, so GOIM_ONLY subsets stay buildable.
if ["CometMain", "LogicMain", "JobMain", "GoIMClient"].allSatisfy({ name in targets.contains { $0.name == name } }) {
    targets.append(
        .testTarget(
            name: "StackTests",
            dependencies: [
                "GoIMClient", "GoIMProtocol", "TestSupport", nio, nioPosix,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ))
}

let executables: [Product] = [("comet", "CometMain"), ("logic", "LogicMain"), ("job", "JobMain"), ("goim-bench", "Bench")]
    .filter { _, target in targets.contains { $0.name == target } }
    .map { name, target in .executable(name: name, targets: [target]) }
// Libraries the benchmark package (Benchmarks/Package.swift) imports.
let libraries: [Product] = ["GoIMProtocol", "GoIMRPC", "GoIMConfig", "Comet"]
    .filter { name in targets.contains { $0.name == name } }
    .map { name in .library(name: name, targets: [name]) }
let products = executables + libraries

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
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: targets,
    swiftLanguageModes: [.v6]
)
