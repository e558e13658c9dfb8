// swift-tools-version: 6.0
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "feedarchive",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "feedarchive", targets: ["FeedArchiveCLI"]),
        .library(name: "FeedArchive", targets: ["FeedArchive"]),
        .library(name: "FeedArchiveSQLite", targets: ["FeedArchiveSQLite"]),
        .library(name: "FeedArchivePostgres", targets: ["FeedArchivePostgres"]),
        .library(name: "FeedArchiveCosmos", targets: ["FeedArchiveCosmos"]),
        .library(name: "FeedArchiveTesting", targets: ["FeedArchiveTesting"]),
        .library(name: "FeedArchiveParquet", targets: ["FeedArchiveParquet"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // PostgreSQL wire protocol, only for FeedArchivePostgres.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]),
        .systemLibrary(
            name: "CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"]), .brew(["lz4"])]),
        .systemLibrary(
            name: "CSQLite", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"]), .brew(["sqlite"])]),
        // mallopt, for the executable's memory bound (see FeedArchiveCommand.main).
        .systemLibrary(name: "CMalloc"),
        // The SHA-256 block function on the x86 SHA extensions, for the transform steps' HMAC.
        .target(name: "CSHA256"),
        .target(
            name: "FeedArchive",
            dependencies: [
                "CZstd", "CLZ4", "CSHA256",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict),
        .target(
            name: "FeedArchiveSQLite",
            dependencies: ["FeedArchive", "CSQLite"],
            swiftSettings: strict),
        .target(
            name: "FeedArchiveCosmos",
            dependencies: [
                "FeedArchive",
                .product(name: "Crypto", package: "swift-crypto"),
                // HTTP/1.1 over NIO rather than URLSession: FoundationNetworking (libcurl) slowed
                // every command's start-up; NIO is linked anyway for PostgreSQL.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict),
        .target(
            name: "FeedArchivePostgres",
            dependencies: [
                "FeedArchive",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Our Parquet writer and reader (no Swift package or Debian library exists).
        .target(
            name: "FeedArchiveParquet",
            dependencies: ["FeedArchive", "CZstd"],
            swiftSettings: strict),
        .target(
            name: "FeedArchiveTesting",
            dependencies: ["FeedArchive"],
            swiftSettings: strict),
        .executableTarget(
            name: "FeedArchiveCLI",
            dependencies: [
                "FeedArchive", "FeedArchiveSQLite", "FeedArchivePostgres", "FeedArchiveCosmos", "FeedArchiveParquet",
                "CMalloc",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "FeedArchiveTests",
            dependencies: [
                "FeedArchive", "FeedArchiveTesting", "CSHA256", .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "FeedArchiveSQLiteTests",
            dependencies: ["FeedArchiveSQLite", "FeedArchiveTesting", "CSQLite"],
            swiftSettings: strict),
        .testTarget(
            name: "FeedArchiveCosmosTests",
            dependencies: ["FeedArchiveCosmos", "FeedArchiveTesting"],
            swiftSettings: strict),
        .testTarget(
            name: "FeedArchivePostgresTests",
            dependencies: ["FeedArchivePostgres", "FeedArchiveTesting"],
            swiftSettings: strict),
        .testTarget(
            name: "FeedArchiveParquetTests",
            dependencies: ["FeedArchiveParquet", "FeedArchiveTesting"],
            swiftSettings: strict),
        .testTarget(
            name: "FeedArchiveCLITests",
            dependencies: ["FeedArchive", "FeedArchiveTesting", "CSQLite"],
            swiftSettings: strict),
    ]
)
