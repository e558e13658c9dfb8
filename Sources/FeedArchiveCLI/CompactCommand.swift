import ArgumentParser
import FeedArchive
import Foundation

struct CompactCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Merge the small blobs of closed hour buckets into one blob per bucket and partition.",
        discussion: """
            A bucket is closed once the archive holds changes --after past its end in every partition. Its blobs that follow one another in the feed become one blob (or several of at most --target-size), with the same records in the same order; a `compact` line in the manifest names the lines it replaces, and the replaced files are deleted only after that line is durable. verify proves a compacted archive complete as before. Takes the job's lock, like run. A compaction stopped at any point loses nothing; the next one finishes what it left.

            Examples:
              feedarchive compact orders --dry-run
              feedarchive compact orders --after 2h --target-size 128MiB
              feedarchive compact orders --format parquet
            """)

    @OptionGroup var selection: JobSelection

    @Option(help: "How far past a bucket's end the archive must hold changes before it is compacted (e.g. 30m, 1h).")
    var after = "1h"

    @Option(help: "The largest compacted blob, compressed (e.g. 256MiB).")
    var targetSize = "256MiB"

    @Option(help: "Write the compacted blobs as parquet (a closed bucket of one JSON-lines blob is converted too).")
    var format: String?

    @Flag(help: "Print what would be merged; change nothing.")
    var dryRun = false

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            let job = try selection.load()
            guard let grace = parseDuration(after), grace >= 0 else {
                throw FeedArchiveError.usage("--after \(after): not a duration (e.g. 30m, 1h)")
            }
            guard let target = parseByteSize(targetSize), target > 0 else {
                throw FeedArchiveError.usage("--target-size \(targetSize): not a size (e.g. 256MiB)")
            }
            var output: Compression?
            switch format {
            case nil: output = job.compaction?.format
            case "parquet": output = .parquet
            case "jsonl": output = job.archive.compression == .parquet ? .zstd : job.archive.compression
            default: throw FeedArchiveError.usage("--format \(format!): parquet or jsonl")
            }
            let report = try Compactor(job: job).compact(
                targetSize: target, after: grace, dryRun: dryRun, format: output)
            let verb = dryRun ? "would merge" : "merged"
            for blob in report.blobs {
                let into = blob.path.map { " into \($0) (\(humanBytes(blob.bytesAfter)))" } ?? ""
                let duplicates = blob.duplicates > 0 ? " (\(blob.duplicates) duplicates of a backfill removed)" : ""
                print(
                    "\(verb) \(blob.replaces.count) blobs of \(blob.folder), partition \(blob.partition): \(blob.records) changes\(duplicates), \(humanBytes(blob.bytesBefore))\(into)"
                )
            }
            for skipped in report.skipped {
                FileHandle.standardError.write(
                    Data(
                        "feedarchive: \(job.name): warning: \(skipped.hasPrefix("held back") ? "" : "left as it is: ")\(skipped)\n"
                            .utf8))
            }
            for leftover in report.leftovers {
                print(
                    "\(dryRun ? "would delete" : "deleted") \(leftover) (replaced by an earlier compaction or removed by a prune)"
                )
            }
            let blobs = report.blobs.reduce(0) { $0 + $1.replaces.count }
            FileHandle.standardError.write(
                Data(
                    "feedarchive: \(job.name): \(dryRun ? "dry run, " : "")\(blobs) blobs \(verb) into \(report.blobs.count), archived through \(report.watermark ?? "no time yet")\n"
                        .utf8))
        }
    }
}
