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
