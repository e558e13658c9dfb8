import Foundation

/// `_feedarchive/last_run.json`: how the last run ended and when one last succeeded, for
/// `status --max-age` and the metrics file (a job that silently stopped must be visible).
public struct RunRecord: Codable, Sendable {
    public var lastRunAt: Double
    public var lastExitCode: Int32
    public var lastSuccessAt: Double?
    public var lastRecords: Int64
    public var lastBlobs: Int
    public var lastSeconds: Double
    public var lastLag: Int64?
    public var lastMessage: String?

    enum CodingKeys: String, CodingKey {
        case lastRunAt = "last_run_at"
        case lastExitCode = "last_exit_code"
        case lastSuccessAt = "last_success_at"
        case lastRecords = "last_records"
        case lastBlobs = "last_blobs"
        case lastSeconds = "last_seconds"
        case lastLag = "last_lag"
        case lastMessage = "last_message"
    }

    public static func load(_ layout: ArchiveLayout, fs: any FileSystem = PosixFileSystem()) -> RunRecord? {
        guard let bytes = try? fs.read(layout.lastRunFile) else { return nil }
        return try? JSONDecoder().decode(RunRecord.self, from: Data(bytes))
    }

    /// Records a run's end; keeps the last success time across failures.
    public static func record(
        _ layout: ArchiveLayout, exitCode: Int32, summary: RunSummary?, message: String?, mode: mode_t,
        fs: any FileSystem = PosixFileSystem()
    ) throws -> RunRecord {
        let now = Date().timeIntervalSince1970
        let previous = load(layout, fs: fs)
        let record = RunRecord(
            lastRunAt: now, lastExitCode: exitCode, lastSuccessAt: exitCode == 0 ? now : previous?.lastSuccessAt,
            lastRecords: summary?.records ?? 0, lastBlobs: summary?.blobs ?? 0, lastSeconds: summary?.seconds ?? 0,
            lastLag: summary?.lag ?? previous?.lastLag, lastMessage: message)
        guard fs.isDirectory(layout.metaDirectory) else { return record }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try fs.replaceAtomically(layout.lastRunFile, with: Array(try encoder.encode(record)) + [0x0A], mode: mode)
        return record
    }
}

/// Totals over the manifest's blob lines.
public struct ArchiveTotals: Sendable {
    public var blobs = 0
    public var records: Int64 = 0
    public var bytes: Int64 = 0
    public var rawBytes: Int64 = 0

    public init(_ manifest: Manifest) {
        for entry in manifest.entries where entry.kind == .blob {
            blobs += 1
            records += entry.records ?? 0
            bytes += entry.bytes ?? 0
            rawBytes += entry.rawBytes ?? 0
        }
    }

    /// Uncompressed over compressed.
    public var ratio: Double { bytes > 0 ? Double(rawBytes) / Double(bytes) : 0 }
}

/// The node_exporter textfile format, written atomically so the collector never reads half a file.
public enum MetricsFile {
    public struct JobMetrics: Sendable {
        public var job: String
        public var record: RunRecord
        public var totals: ArchiveTotals
        /// Source gauges (`feedarchive_source_<name>`).
        public var source: [String: Double]
        public init(job: String, record: RunRecord, totals: ArchiveTotals, source: [String: Double] = [:]) {
            self.job = job
            self.record = record
            self.totals = totals
            self.source = source
        }
    }

    public static func render(_ jobs: [JobMetrics]) -> String {
        var text = ""
        func metric(_ name: String, _ help: String, _ value: (JobMetrics) -> Double?) {
            text += "# HELP feedarchive_\(name) \(help)\n# TYPE feedarchive_\(name) gauge\n"
            for job in jobs {
                guard let number = value(job) else { continue }
                let label = job.job.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                text += "feedarchive_\(name){job=\"\(label)\"} \(format(number))\n"
            }
        }
        metric("last_success_timestamp_seconds", "Unix time of the last run that exited 0.") { $0.record.lastSuccessAt }
        metric("last_run_timestamp_seconds", "Unix time of the last run.") { $0.record.lastRunAt }
        metric("last_exit_code", "Exit code of the last run.") { Double($0.record.lastExitCode) }
        metric("last_run_duration_seconds", "Duration of the last run.") { $0.record.lastSeconds }
        metric("last_run_records", "Changes archived by the last run.") { Double($0.record.lastRecords) }
        metric("lag_changes", "Changes in the source not yet archived, after the last run.") { $0.record.lastLag.map(Double.init) }
        metric("blobs", "Blobs in the archive.") { Double($0.totals.blobs) }
        metric("records", "Changes in the archive.") { Double($0.totals.records) }
        metric("bytes", "Compressed bytes in the archive.") { Double($0.totals.bytes) }
        metric("raw_bytes", "Uncompressed bytes in the archive.") { Double($0.totals.rawBytes) }
        for name in Set(jobs.flatMap(\.source.keys)).sorted() {
            metric("source_\(name)", "Source gauge \(name), read after the last run.") { $0.source[name] }
        }
        return text
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }

    public static func write(_ jobs: [JobMetrics], to path: String, fs: any FileSystem = PosixFileSystem()) throws {
        try fs.replaceAtomically(path, with: Array(render(jobs).utf8), mode: 0o644)
    }
}
