import Foundation

/// One job file (`jobs/NAME.yaml`): what to read, where to archive it, and how to cut batches.
public struct JobConfig: Sendable {
    /// The job name: the archive folder under the root and the name in logs and metrics.
    public var name: String
    /// The job file, for messages.
    public var file: String
    /// Source kind and its settings; the source module reads `settings`.
    public var sourceKind: String
    public var sourceSettings: ConfigNode
    public var archive: ArchiveSettings
    public var batch: BatchLimits
    /// Where the first run starts.
    public var start: StartSpec
    /// `compact:` in the job file: `run` compacts closed buckets after it archives.
    public var compaction: CompactionSettings?
    /// `retention: 400d` in the job file: `run` removes blobs whose changes are all older
    /// (`feedarchive prune` with that cut), at most once an hour.
    public var retention: Double?
    /// `transform:` in the job file: steps applied to each record before it is batched.
    public var transform: Transform?

    /// Loads and checks a job file. Relative paths inside it are resolved against its folder,
    /// so cron can start the job from anywhere.
    public static func load(path: String) throws -> JobConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FeedArchiveError.badJobFile(place: path, message: "cannot read the job file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw FeedArchiveError.badJobFile(place: path, message: "the job file is not UTF-8")
        }
        return try parse(yaml: text, file: path)
    }

    public static func parse(yaml: String, file: String) throws -> JobConfig {
        let root = try ConfigNode.parse(yaml: yaml, file: file).mapping("the job file")
        let base = parentDirectory(of: file)
        let nameNode = try root.required("name")
        let name = try nameNode.string("name")
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }),
            !name.hasPrefix(".")
        else { throw nameNode.error("name must be letters, digits, '-', '_' or '.', not '\(name)'") }

        let source = try root.required("source").mapping("source")
        let kindNode = try source.required("kind")
        let kind = try kindNode.string("source.kind")

        let archive = try ArchiveSettings.parse(try root.required("archive"), base: base)
        let batch = try BatchLimits.parse(root.optional("batch"))
        let start = try root.optional("start").map { StartSpec.parse(try $0.string("start")) } ?? .beginning
        let compaction = try root.optional("compact").map(CompactionSettings.parse)
        let retention = try root.optional("retention").map { node in
            let text = try node.string("retention")
            guard let seconds = parseDuration(text), seconds >= 3600 else {
                throw node.error("retention must be a duration of at least an hour such as 400d or 90d, not '\(text)'")
            }
            return seconds
        }
        let transformNode = root.optional("transform")
        let transform = try transformNode.map { try Transform.parse($0, base: base) }
        if let transform, transform.partitions, archive.partitionPath != nil {
            throw transformNode!.error(
                "transform has a partition_by and archive.partition_path is set: one makes the folders, keep one")
        }
        try root.finish()
        var job = JobConfig(
            name: name, file: file, sourceKind: kind, sourceSettings: source.node,
            archive: archive, batch: batch, start: start)
        job.compaction = compaction
        job.retention = retention
        job.transform = transform
        return job
    }

    /// Resolves a path from the job file against the job file's folder.
    public static func resolve(_ path: String, base: String) -> String {
        path.hasPrefix("/") ? path : (base == "." ? path : base + "/" + path)
    }
}

/// Where and how blobs are written.
public struct ArchiveSettings: Sendable {
    /// The data-lake root; the job's archive is `<root>/<job>`.
    public var root: String
    public var compression: Compression
    public var level: Int
    /// zstd worker threads (0: compress on the reading thread); nil: the source's default
    /// (`FeedSource.defaultCompressionWorkers`).
    public var workers: Int?
    /// Optional partition path template; `{value}` is the source's path value for a change.
    public var partitionPath: String?
    /// Time zone of the `date=`/`hour=` folders.
    public var timeZone: String
    /// `columns:` (Parquet only): top-level fields of `after` also written as typed columns.
    public var columns: [PromotedColumn] = []

    /// `row_group_size` (Parquet only): envelope bytes per row group; nil: 128 MiB.
    public var rowGroupSize: Int64?

    /// What a blob format needs beyond the codec: the promoted columns (`name:type,…`), after
    /// `row_group=N;` when the row-group size is set.
    public var formatOptions: String {
        (rowGroupSize.map { "row_group=\($0);" } ?? "") + columns.map { $0.name + ":" + $0.type }.joined(separator: ",")
    }
    public var fileMode: mode_t
    public var directoryMode: mode_t

    static func parse(_ node: ConfigNode, base: String) throws -> ArchiveSettings {
        let map = try node.mapping("archive")
        let root = JobConfig.resolve(try map.required("root").string("archive.root"), base: base)
        var compression = Compression.zstd
        if let node = map.optional("compression") {
            let text = try node.string("archive.compression")
            guard let value = Compression(rawValue: text), value != .parquet else {
                throw node.error("archive.compression must be zstd, lz4 or none, not '\(text)'")
            }
            compression = value
        }
        // `format: parquet`: blobs are Parquet files with zstd pages (at archive.level).
        if let node = map.optional("format") {
            let text = try node.string("archive.format")
            switch text {
            case "jsonl": break
            case "parquet":
                guard compression == .zstd else {
                    throw node.error(
                        "archive.format parquet compresses its pages with zstd: leave archive.compression out")
                }
                compression = .parquet
            default: throw node.error("archive.format must be jsonl or parquet, not '\(text)'")
            }
        }
        var level = compression == .lz4 ? 0 : 3
        if let node = map.optional("level") {
            level = try node.int("archive.level")
            let range = compression == .lz4 ? -1...12 : -7...22
            guard range.contains(level) else {
                throw node.error(
                    "archive.level for \(compression.rawValue) must be in \(range.lowerBound)...\(range.upperBound)")
            }
        }
        var workers: Int?
        if let node = map.optional("workers") {
            let value = try node.int("archive.workers")
            guard (0...64).contains(value) else { throw node.error("archive.workers must be in 0...64") }
            workers = value
        }
        let partitionPath = try map.optional("partition_path").map { try $0.string("archive.partition_path") }
        var timeZone = "UTC"
        if let node = map.optional("time_zone") {
            timeZone = try node.string("archive.time_zone")
            guard TimeZone(identifier: timeZone) != nil else {
                throw node.error("archive.time_zone '\(timeZone)' is not a known time zone")
            }
        }
        func mode(_ key: String, _ fallback: mode_t) throws -> mode_t {
            guard let node = map.optional(key) else { return fallback }
            let text = try node.string("archive.\(key)")
            guard let value = mode_t(text, radix: 8), value <= 0o777 else {
                throw node.error("archive.\(key) must be an octal mode such as 0640")
            }
            return value
        }
        var columns: [PromotedColumn] = []
        if let node = map.optional("columns") {
            guard compression == .parquet else {
                throw node.error("archive.columns needs archive.format: parquet")
            }
            let fields = try node.mapping("archive.columns")
            for name in fields.keys {
                let typeNode = try fields.required(name)
                let type = try typeNode.string("archive.columns.\(name)")
                guard PromotedColumn.types.contains(type) else {
                    throw typeNode.error(
                        "archive.columns.\(name) must be one of \(PromotedColumn.types.joined(separator: ", ")), not '\(type)'"
                    )
                }
                guard !name.isEmpty,
                    name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }),
                    !PromotedColumn.envelope.contains(name)
                else {
                    throw typeNode.error(
                        "archive.columns: '\(name)' must be letters, digits, '_', '-' or '.', and not an envelope field (\(PromotedColumn.envelope.joined(separator: ", ")))"
                    )
                }
                columns.append(PromotedColumn(name: name, type: type))
            }
            try fields.finish()
        }
        var rowGroupSize: Int64?
        if let node = map.optional("row_group_size") {
            guard compression == .parquet else {
                throw node.error("archive.row_group_size needs archive.format: parquet")
            }
            let size = try node.byteSize("archive.row_group_size")
            guard size >= 1 << 20, size <= 1 << 30 else {
                throw node.error("archive.row_group_size must be between 1MiB and 1GiB")
            }
            rowGroupSize = size
        }
        let fileMode = try mode("file_mode", 0o640)
        let directoryMode = try mode("directory_mode", 0o750)
        try map.finish()
        var settings = ArchiveSettings(
            root: root, compression: compression, level: level, workers: workers, partitionPath: partitionPath,
            timeZone: timeZone, fileMode: fileMode, directoryMode: directoryMode)
        settings.columns = columns
        settings.rowGroupSize = rowGroupSize
        return settings
    }
}

extension JobConfig {
    /// What job.json records and every run compares: the archive's shape, the source's, and
    /// the transform section's hash.
    public func shape(source: [String: String]) -> [String: String] {
        var shape = archive.shape.merging(source) { $1 }
        if let transform { shape["transform"] = transform.hash }
        return shape
    }
}

extension ArchiveSettings {
    /// The archive settings that decide blob names, folders and format (job.json records them).
    public var shape: [String: String] {
        var shape = [
            "archive.compression": compression.rawValue, "archive.partition_path": partitionPath ?? "",
            "archive.time_zone": timeZone,
        ]
        if !columns.isEmpty {
            shape["archive.columns"] = columns.map { $0.name + ":" + $0.type }.joined(separator: ",")
        }
        return shape
    }
}

/// A top-level field of `after` written as a typed Parquet column (`archive.columns`).
public struct PromotedColumn: Sendable, Equatable {
    public static let types = ["string", "int64", "double", "bool", "timestamp"]
    public static let envelope = ["pos", "part", "op", "ts", "key", "after", "before", "source"]
    public var name: String
    public var type: String
}

/// When to cut a batch and when to stop a run.
public struct BatchLimits: Sendable {
    public var maxRecords: Int = 100_000
    public var maxBytes: Int64 = 64 << 20
    /// A run stops reading after this many seconds and commits what it has.
    public var maxDuration: Double?
    /// Records per source read.
    public var pageSize: Int = 2000

    public init() {}

    static func parse(_ node: ConfigNode?) throws -> BatchLimits {
        var limits = BatchLimits()
        guard let node else { return limits }
        let map = try node.mapping("batch")
        if let node = map.optional("max_records") {
            limits.maxRecords = try node.int("batch.max_records")
            guard limits.maxRecords > 0 else { throw node.error("batch.max_records must be positive") }
        }
        if let node = map.optional("max_bytes") { limits.maxBytes = try node.byteSize("batch.max_bytes") }
        if let node = map.optional("max_duration") { limits.maxDuration = try node.duration("batch.max_duration") }
        if let node = map.optional("page_size") {
            limits.pageSize = try node.int("batch.page_size")
            guard (1...1_000_000).contains(limits.pageSize) else {
                throw node.error("batch.page_size must be in 1...1000000")
            }
        }
        try map.finish()
        return limits
    }
}

/// `compact: {after: 1h, target_size: 256MiB}`: one cron line archives and keeps the lake
/// compacted (`feedarchive compact` with these settings after each successful run).
public struct CompactionSettings: Sendable {
    /// How far past a bucket's end the archive must hold changes before it is compacted.
    public var after: Double = 3600
    /// The largest compacted blob, compressed.
    public var targetSize: Int64 = 256 << 20
    /// `format: parquet`: compacted buckets become Parquet (nil: the job's own format).
    public var format: Compression?

    public init() {}

    static func parse(_ node: ConfigNode) throws -> CompactionSettings {
        var settings = CompactionSettings()
        let map = try node.mapping("compact")
        if let node = map.optional("after") {
            // 0s is allowed: a bucket closes as soon as the archive holds a later change.
            let text = try node.string("compact.after")
            guard let after = parseDuration(text) ?? (text == "0" || text == "0s" ? 0 : nil), after >= 0 else {
                throw node.error("compact.after must be a duration such as 0s, 30m or 1h, not '\(text)'")
            }
            settings.after = after
        }
        if let node = map.optional("format") {
            let text = try node.string("compact.format")
            guard text == "parquet" || text == "jsonl" else {
                throw node.error("compact.format must be parquet or jsonl, not '\(text)'")
            }
            settings.format = text == "parquet" ? .parquet : nil
        }
        if let node = map.optional("target_size") {
            settings.targetSize = try node.byteSize("compact.target_size")
            guard settings.targetSize > 0 else { throw node.error("compact.target_size must be positive") }
        }
        try map.finish()
        return settings
    }
}
