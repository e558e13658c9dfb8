import Foundation

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
                let label = job.job.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
                    of: "\"", with: "\\\"")
                text += "feedarchive_\(name){job=\"\(label)\"} \(format(number))\n"
            }
        }
        metric("last_success_timestamp_seconds", "Unix time of the last run that exited 0.") { $0.record.lastSuccessAt }
        metric("last_run_timestamp_seconds", "Unix time of the last run.") { $0.record.lastRunAt }
        metric("last_exit_code", "Exit code of the last run.") { Double($0.record.lastExitCode) }
        metric("last_run_duration_seconds", "Duration of the last run.") { $0.record.lastSeconds }
        metric("last_run_records", "Changes archived by the last run.") { Double($0.record.lastRecords) }
        metric("lag_changes", "Changes in the source not yet archived, after the last run.") {
            $0.record.lastLag.map(Double.init)
        }
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
