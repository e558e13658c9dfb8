import Foundation

/// What `feedarchive status` knows about a job: its checkpoint, lag, last run and archive size.
public struct StatusReport {
    /// The job's name and the file it was read from.
    public var job: String
    public var jobFile: String
    /// The job's folder in the lake.
    public var archiveRoot: String
    /// Totals over the manifest's blob lines.
    public var totals: ArchiveTotals
    /// The last intact manifest line's seq.
    public var manifestSeq: Int64
    /// Nil when the job has not run.
    public var checkpoint: Checkpoint?
    /// The checkpoint token's cursor per partition.
    public var cursors: [String: String]?
    /// Changes in the source after the checkpoint, when the source can count them.
    public var lag: Int64?
    /// Why the source could not be asked (it is unreachable, say); status still reports the rest.
    public var lagError: String?
    /// Source-specific lines (PostgreSQL: slot lag, retained WAL), as label and value.
    public var sourceFacts: [(String, String)] = []
    /// How the last run ended (`last_run.json`); nil when none ran.
    public var lastRun: RunRecord?
    /// Manifest damage found on reading (a torn last line, or worse).
    public var damage: ManifestDamage?
    /// The largest age allowed for the last successful run (`--max-age`, in seconds), once
    /// `checkFreshness` was asked.
    public private(set) var maxAge: Double?
    /// True when `checkFreshness` found no successful run within `maxAge`.
    public private(set) var isStale = false

    /// Reads the archive without changing it, then asks the source for the lag and its facts
    /// when the job has a checkpoint. A source that cannot answer is reported in `lagError`,
    /// not thrown: status must work when the source is down.
    public init(job: JobConfig, source: SourceProvider, fs: any FileSystem = PosixFileSystem()) async throws {
        let archive = JobArchive(job: job, fs: fs)
        damage = try archive.loadTail()
        self.job = job.name
        jobFile = job.file
        archiveRoot = archive.layout.jobRoot
        totals = try archive.totalsAtTail()
        manifestSeq = archive.manifest.tailSeq
        checkpoint = archive.checkpoint
        lastRun = RunRecord.load(archive.layout, fs: fs)
        let token = archive.checkpoint.flatMap { try? ContinuationToken.decode($0.token) }
        cursors = token?.cursors
        if let token {
            do {
                (lag, sourceFacts) = try await source.withSource(job) {
                    (try await $0.lag(from: token), try await $0.statusFacts())
                }
            } catch {
                lagError = "\(error)"
            }
        }
    }

    /// Marks the report stale when no run succeeded within `maxAge` seconds before `now` (a job
    /// that never succeeded is stale).
    public mutating func checkFreshness(maxAge: Double, now: Date = Date()) {
        self.maxAge = maxAge
        isStale = now.timeIntervalSince1970 - (lastRun?.lastSuccessAt ?? 0) > maxAge
    }

    /// The report as `status --json` prints it: sorted keys, absent facts left out, `stale` only
    /// when freshness was checked.
    public func json() throws -> String {
        var object: [String: Any] = [
            "job": job, "archive": archiveRoot, "blobs": totals.blobs, "records": totals.records,
            "bytes": totals.bytes, "raw_bytes": totals.rawBytes, "manifest_seq": manifestSeq,
        ]
        object["checkpoint"] = checkpoint?.token
        object["cursors"] = cursors
        object["lag"] = lag
        if !sourceFacts.isEmpty { object["source"] = Dictionary(sourceFacts, uniquingKeysWith: { $1 }) }
        object["last_run_at"] = lastRun?.lastRunAt
        object["last_exit_code"] = lastRun?.lastExitCode
        object["last_success_at"] = lastRun?.lastSuccessAt
        if maxAge != nil { object["stale"] = isStale }
        let data = try JSONSerialization.data(
            withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
