import ArgumentParser
import FeedArchive
import Foundation

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a job's checkpoint, lag, last run and archive size.",
        discussion: """
            With --max-age, exits 1 when no run of the job succeeded within that time: put it in
            your monitoring so a job that silently stopped is noticed.

            Examples:
              feedarchive status quickstart
              feedarchive status quickstart --max-age 2h || page-someone
              feedarchive status quickstart --json
            """)

    @OptionGroup var selection: JobSelection
    var job: String { selection.job }

    @Option(help: "Exit 1 when the last successful run is older than this (e.g. 2h).")
    var maxAge: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        try await Frontend.run(job: job) {
            try await show()
        }
    }

    private func show() async throws {
        let config = try selection.load()
        let archive = JobArchive(job: config)
        let damage = try archive.load()
        let totals = ArchiveTotals(archive.manifest)
        let record = RunRecord.load(archive.layout)
        var lag: Int64?
        var lagError: String?
        var facts: [(String, String)] = []
        if let token = archive.checkpoint.flatMap({ try? ContinuationToken.decode($0.token) }) {
            do {
                (lag, facts) = try await Frontend.withSource(config) { (try await $0.lag(from: token), try await $0.statusFacts()) }
            } catch {
                lagError = "\(error)"
            }
        }
        var stale = false
        var maxAgeSeconds: Double?
        if let maxAge {
            guard let seconds = parseDuration(maxAge) else { throw FeedArchiveError.usage("--max-age '\(maxAge)' is not a duration") }
            maxAgeSeconds = seconds
            let last = record?.lastSuccessAt ?? 0
            stale = Date().timeIntervalSince1970 - last > seconds
        }
        let cursors = archive.checkpoint.flatMap { try? ContinuationToken.decode($0.token) }?.cursors
        if json {
            var object: [String: Any] = [
                "job": config.name, "archive": archive.layout.jobRoot, "blobs": totals.blobs, "records": totals.records,
                "bytes": totals.bytes, "raw_bytes": totals.rawBytes, "manifest_seq": archive.manifest.tailSeq,
            ]
            object["checkpoint"] = archive.checkpoint?.token
            object["cursors"] = cursors
            object["lag"] = lag
            if !facts.isEmpty { object["source"] = Dictionary(facts, uniquingKeysWith: { $1 }) }
            object["last_run_at"] = record?.lastRunAt
            object["last_exit_code"] = record?.lastExitCode
            object["last_success_at"] = record?.lastSuccessAt
            if maxAgeSeconds != nil { object["stale"] = stale }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            func time(_ seconds: Double?) -> String {
                seconds.map { formatRFC3339(microseconds: Int64($0) * 1_000_000) } ?? "never"
            }
            print("job         \(config.name)  (\(config.file))")
            print("archive     \(archive.layout.jobRoot)")
            if let checkpoint = archive.checkpoint {
                let where_ = cursors.map { $0.keys.sorted().map { "part \($0) at \(cursors![$0]!)" }.joined(separator: ", ") } ?? "?"
                print("checkpoint  \(where_)  (manifest seq \(checkpoint.manifestSeq), updated \(checkpoint.updatedAt))")
                print("token       \(checkpoint.token)")
            } else {
                print("checkpoint  none (the job has not run)")
            }
            if lag != nil || facts.isEmpty {
                print("lag         \(lag.map { "\($0) changes" } ?? "unknown\(lagError.map { " (\($0))" } ?? "")")")
            }
            for (label, value) in facts { print(label.padding(toLength: 11, withPad: " ", startingAt: 0) + " " + value) }
            if let record {
                print("last run    \(time(record.lastRunAt)), exit \(record.lastExitCode), \(record.lastRecords) changes in \(record.lastBlobs) blobs, \(String(format: "%.2f", record.lastSeconds)) s")
                print("last ok     \(time(record.lastSuccessAt))")
            } else {
                print("last run    never")
            }
            let ratio = totals.ratio > 0 ? String(format: ", ratio %.1fx", totals.ratio) : ""
            print("blobs       \(totals.blobs), \(totals.records) changes, \(humanBytes(totals.bytes)) compressed from \(humanBytes(totals.rawBytes))\(ratio)")
            if let damage { print("manifest    damaged at \(damage.file):\(damage.line): \(damage.message)") }
            if stale { print("STALE       no successful run within \(maxAge!)") }
        }
        if stale { throw ExitCode(1) }
    }
}
