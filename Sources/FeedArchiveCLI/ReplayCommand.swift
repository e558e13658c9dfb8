import ArgumentParser
import FeedArchive
import FeedArchiveSQLite
import Foundation

struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Apply an archive's changes to a target table, up to now or to a point in time.",
        discussion: """
            A replay job file names the archive job it reads (archive_job) and its target (target: {kind: sqlite, path, table}). Changes are applied in feed order per partition: c, u, r and w upsert by key, d deletes by key, t empties the table. The table holds key (the envelope's key, JSON text) and doc (the document after the change, JSON text). The positions applied are kept in the target (_feedarchive_replay), in the same transaction as the rows, so a replay killed at any point resumes exactly where it committed; run it from cron to keep the target up to date. It reads the archive, never the source.

            Examples:
              feedarchive replay orders-replica.yaml
              feedarchive replay orders-replica.yaml --until 2026-11-23T14:00:00Z --from-scratch
            """)

    @Argument(help: "The replay job file.")
    var job: String

    @Option(help: "Stop each partition at its first change stamped at or after this time (RFC 3339).")
    var until: String?

    @Flag(help: "Empty the target table and its positions first.")
    var fromScratch = false

    func run() async throws {
        try await Frontend.run(job: job) {
            let replay = try ReplayJob.load(path: job)
            var cut: Int64?
            if let until {
                guard let date = parseRFC3339(until) else {
                    throw FeedArchiveError.usage("--until \(until): not a time (2026-11-23T14:00:00Z)")
                }
                cut = Int64(date.timeIntervalSince1970 * 1_000_000)
            }
            guard replay.targetKind == "sqlite" else {
                throw FeedArchiveError.badJobFile(
                    place: job, message: "target.kind \(replay.targetKind): only sqlite is supported by this version")
            }
            let summary = try Replayer(job: replay, target: try SQLiteReplayTarget.make(replay)).run(
                until: cut, fromScratch: fromScratch)
            let held = summary.held > 0 ? ", stopped at --until" : ""
            FileHandle.standardError.write(
                Data(
                    "feedarchive: \(replay.name): replayed \(summary.applied) changes from \(summary.blobs) blobs of \(replay.archive.name)\(held)\n"
                        .utf8))
        }
    }
}
