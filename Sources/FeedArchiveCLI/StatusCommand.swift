import ArgumentParser
import FeedArchive
import Foundation

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a job's checkpoint, lag, last run and archive size.",
        discussion: """
            With --max-age, exits 1 when no run of the job succeeded within that time: put it in your monitoring so a job that silently stopped is noticed.

            Examples:
              feedarchive status quickstart
              feedarchive status quickstart --max-age 2h || page-someone
              feedarchive status quickstart --json
            """)

    @OptionGroup var selection: JobSelection

    @Option(help: "Exit 1 when the last successful run is older than this (e.g. 2h).")
    var maxAge: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            var report = try await StatusReport(job: try selection.load(), source: .registry(.all))
            if let maxAge {
                guard let seconds = parseDuration(maxAge) else {
                    throw FeedArchiveError.usage("--max-age '\(maxAge)' is not a duration")
                }
                report.checkFreshness(maxAge: seconds)
            }
            print(try json ? report.json() : text(report))
            if report.isStale { throw ExitCode(1) }
        }
    }

    private func text(_ report: StatusReport) -> String {
        func time(_ seconds: Double?) -> String {
            seconds.map { formatRFC3339(microseconds: Int64($0) * 1_000_000) } ?? "never"
        }
        var lines = [
            "job         \(report.job)  (\(report.jobFile))",
            "archive     \(report.archiveRoot)",
        ]
        if let checkpoint = report.checkpoint {
            let place =
                report.cursors.map { cursors in
                    cursors.keys.sorted().map { "part \($0) at \(cursors[$0]!)" }.joined(separator: ", ")
                } ?? "?"
            lines.append(
                "checkpoint  \(place)  (manifest seq \(checkpoint.manifestSeq), updated \(checkpoint.updatedAt))")
            lines.append("token       \(checkpoint.token)")
        } else {
            lines.append("checkpoint  none (the job has not run)")
        }
        if report.lag != nil || report.sourceFacts.isEmpty {
            lines.append(
                "lag         \(report.lag.map { "\($0) changes" } ?? "unknown\(report.lagError.map { " (\($0))" } ?? "")")"
            )
        }
        for (label, value) in report.sourceFacts {
            lines.append(label.padding(toLength: 11, withPad: " ", startingAt: 0) + " " + value)
        }
        if let record = report.lastRun {
            lines.append(
                "last run    \(time(record.lastRunAt)), exit \(record.lastExitCode), \(record.lastRecords) changes in \(record.lastBlobs) blobs, \(String(format: "%.2f", record.lastSeconds)) s"
            )
            lines.append("last ok     \(time(record.lastSuccessAt))")
        } else {
            lines.append("last run    never")
        }
        let totals = report.totals
        let ratio = totals.ratio > 0 ? String(format: ", ratio %.1fx", totals.ratio) : ""
        lines.append(
            "blobs       \(totals.blobs), \(totals.records) changes\(totals.filtered > 0 ? " (and \(totals.filtered) filtered out by the transform)" : "")\(totals.rejected > 0 ? " (and \(totals.rejected) rejected by the transform: feedarchive cat --rejected)" : ""), \(humanBytes(totals.bytes)) compressed from \(humanBytes(totals.rawBytes))\(ratio)"
        )
        if let damage = report.damage {
            lines.append("manifest    damaged at \(damage.file):\(damage.line): \(damage.message)")
        }
        if report.isStale, let maxAge { lines.append("STALE       no successful run within \(maxAge)") }
        return lines.joined(separator: "\n")
    }
}
