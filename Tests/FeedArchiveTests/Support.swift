import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// A job over the in-memory source, archived under `dir/lake`.
func memoryJob(
    in dir: TempDirectory, maxRecords: Int = 10, compression: String = "zstd", partitionPath: String? = nil,
    extra: String = ""
) throws -> JobConfig {
    var yaml = """
        name: mem
        source:
          kind: memory
        archive:
          root: \(dir.path)/lake
          compression: \(compression)

        """
    if let partitionPath { yaml += "  partition_path: \"\(partitionPath)\"\n" }
    yaml += extra
    yaml += """
        batch:
          max_records: \(maxRecords)
          page_size: 4

        """
    return try JobConfig.parse(yaml: yaml, file: dir.path + "/mem.yaml")
}

/// A fresh in-memory feed of `changes` single-change groups, archived by one run; the archive
/// is returned loaded.
func archivedMemoryFeed(in dir: TempDirectory, changes: Int = 20, maxRecords: Int = 5) async throws -> (
    JobConfig, InMemorySource, JobArchive
) {
    let job = try memoryJob(in: dir, maxRecords: maxRecords)
    let source = InMemorySource()
    for _ in 0..<changes { source.append() }
    _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
    let archive = JobArchive(job: job)
    _ = try archive.load()
    return (job, source, archive)
}

/// An archive whose checkpoint was left behind its manifest, as when a run dies between the
/// manifest append and the checkpoint replace: `first` changes checkpointed, `more` only in the manifest.
func archiveWithCheckpointBehind(in dir: TempDirectory, first: Int = 10, more: Int = 10) async throws -> (
    JobConfig, InMemorySource, JobArchive
) {
    let (job, source, archive) = try await archivedMemoryFeed(in: dir, changes: first)
    let saved = try #require(try PosixFileSystem().read(archive.layout.checkpointFile))
    for _ in 0..<more { source.append() }
    _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
    try Data(saved).write(to: URL(fileURLWithPath: archive.layout.checkpointFile))
    return (job, source, archive)
}

/// The `pos` of an envelope line.
func position(of line: String) -> String {
    let start = line.range(of: #""pos":""#)!.upperBound
    return String(line[start...].prefix { $0 != "\"" })
}

let hour: Int64 = 3_600_000_000
let baseTime: Int64 = 1_795_000_000_000_000  // 2026-11-18T11:06:40Z

/// Runs the job with a SIGTERM raised from `onCommit` when `when` says so; expects exit 143 and
/// no temp file left, and returns the archive as the interrupted run left it.
func runInterruptedOnCommit(
    _ job: JobConfig, _ source: any FeedSource, when: @escaping @Sendable (RunProgress) -> Bool
) async throws -> JobArchive {
    var options = RunOptions()
    let stop = options.stop
    options.onCommit = { progress in if when(progress) { stop.raise(SIGTERM) } }
    await #expect {
        try await ArchiveRunner(job: job, source: source).run(options)
    } throws: { error in
        (error as? FeedArchiveError)?.exitCode == 143
    }
    let archive = JobArchive(job: job)
    _ = try archive.load()
    #expect(try archive.dataFiles().allSatisfy { !$0.hasSuffix(".tmp") })
    return archive
}
