import ArgumentParser
import FeedArchive
import Foundation

struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Retention: remove the blobs whose changes are all older than a cut (a dry run unless --yes).",
        discussion: """
            Removes whole blobs only, and per partition only the oldest ones, up to the first blob that holds a change at or after the cut, so the archive stays one unbroken range. Only what a clean verify proved (the lines after the last verify are verified first), only blobs of closed buckets, nothing while a backfill is unfinished, never a file another line names too. A `prune` line in the manifest names what goes and is durable before any file is deleted; verify then proves the archive from there on. Without --yes it prints what would go and changes nothing. With `retention: 400d` in the job, `feedarchive run` applies it after a successful run, at most once an hour. Takes the job's lock, like run.

            Examples:
              feedarchive prune orders --before 400d
              feedarchive prune orders --before 2025-01-01T00:00:00Z --yes
            """)

    @OptionGroup var selection: JobSelection

    @Option(help: "The cut: a time (RFC 3339) or an age (400d, 36h). Default: the job's retention.")
    var before: String?

    @Flag(help: "Delete. Without it, print what would be removed and change nothing.")
    var yes = false

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            let job = try selection.load()
            let now = Date()
            let cut: Date
            if let before {
                // A time with its date in full, or an age with its unit and of at least an hour:
                // `2025` or `400` must not mean seconds ago.
                let unit = before.last.map { "dhm".contains($0) } ?? false
                if before.count >= 10, let date = parseRFC3339(before) {
                    cut = date
                } else if unit, let age = parseDuration(before), age >= 3600 {
                    cut = now.addingTimeInterval(-age)
                } else {
                    throw FeedArchiveError.usage(
                        "--before \(before): give a time (2025-01-01 or 2025-01-01T00:00:00Z) or an age of at least an hour with its unit (400d, 36h)"
                    )
                }
            } else if let retention = job.retention {
                cut = now.addingTimeInterval(-retention)
            } else {
                throw FeedArchiveError.usage(
                    "job \(job.name) has no `retention:`; give the cut with --before (e.g. --before 400d)")
            }
            guard cut <= now else {
                throw FeedArchiveError.usage("--before \(before ?? ""): the cut is in the future")
            }
            let report = try Pruner(job: job).prune(
                before: Int64(cut.timeIntervalSince1970 * 1_000_000), dryRun: !yes)
            let verb = yes ? "removed" : "would remove"
            for blob in report.blobs {
                print("\(verb) \(blob.path) (\(blob.records) changes, \(humanBytes(blob.bytes)), newest \(blob.maxTs))")
            }
            for leftover in report.leftovers {
                print(
                    "\(yes ? "deleted" : "would delete") \(leftover) (removed from the archive by an earlier prune or compaction)"
                )
            }
            for held in report.held {
                FileHandle.standardError.write(Data("feedarchive: \(job.name): held back: \(held)\n".utf8))
            }
            let next = yes || report.blobs.isEmpty ? "" : "; run again with --yes to delete"
            FileHandle.standardError.write(
                Data(
                    "feedarchive: \(job.name): \(yes ? "" : "dry run, ")\(verb) \(report.blobs.count) blobs, \(report.records) changes, \(humanBytes(report.bytes)) from before \(report.cut)\(next)\n"
                        .utf8))
        }
    }
}
