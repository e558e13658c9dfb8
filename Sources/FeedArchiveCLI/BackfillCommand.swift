import ArgumentParser
import FeedArchive
import Foundation

struct BackfillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backfill",
        abstract: "Re-archive a range of the feed into its own lineage, e.g. to mend a gap verify found.",
        discussion: """
            Reads from --from up to --until (default: the live checkpoint) through the same commit protocol as `run`, into lineage backfill-<id>. It never moves the live checkpoint. Running the same command again resumes where it stopped; --max-duration lets cron run it in slices. A blob that already exists with the same bytes is skipped; the same name with other bytes is refused (exit 65). A range the source no longer holds is refused.

            Examples:
              feedarchive backfill quickstart --from beginning
              feedarchive backfill orders --from sqlite:eyJj... --until sqlite:eyJj...   (printed by verify)
              feedarchive backfill orders --from 2026-11-01T00:00:00Z --max-duration 10m
            """)

    @OptionGroup var selection: JobSelection

    @Option(help: "Start after this token, or at beginning / an RFC 3339 time / a source form such as seq=42.")
    var from: String

    @Option(help: "Stop at this token (default: checkpoint, the live checkpoint when the backfill started).")
    var until: String?

    @Option(help: "Stop reading after this long and commit what is batched; run again to resume.")
    var maxDuration: String?

    @Option(help: "Log format on stderr: text or json.")
    var logFormat: LogFormat = .text

    @Option(
        help:
            "End a backfill that makes no progress (no page read, no commit) for this long, with exit 75; 0 turns it off."
    )
    var stallTimeout = "15m"

    func run() async throws {
        let log = RunLog(format: logFormat)
        guard let stallLimit = parseDuration(stallTimeout) else {
            throw ValidationError("--stall-timeout '\(stallTimeout)' is not a duration such as 15m (0 turns it off)")
        }
        try await Frontend.run(job: selection.job, log: log) {
            let job = try selection.load()
            let options = RunOptions(maxDuration: maxDuration.flatMap(parseDuration), stop: stopSignal)
            Watchdog(limit: stallLimit, log: log).watch(job, options.liveness)
            let summary = try await SourceRegistry.all.withSource(job) { source in
                try await BackfillRunner(job: job, source: source).run(from: from, until: until, options: options)
            }
            log.summary(summary)
        }
    }
}
