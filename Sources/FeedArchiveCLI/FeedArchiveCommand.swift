import ArgumentParser
import CMalloc
import FeedArchive
import FeedArchiveParquet
import Foundation

/// The process-wide stop flag that SIGINT/SIGTERM set.
let stopSignal = StopSignal()

@main
struct FeedArchiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "feedarchive",
        abstract: "Archive database change feeds into a durable, verifiable data lake.",
        discussion: """
            Jobs are YAML files (see jobs/). A job reads its source from the last checkpoint, writes compressed append-only blobs, and moves the checkpoint only after they are durable.

            Exit codes: 0 done, 1 verify found problems, 64 usage, 65 data error, 69 source unavailable, 74 I/O error, 75 locked or temporary failure, 78 bad job file, 130/143 interrupted.

            Examples:
              feedarchive run quickstart
              feedarchive status quickstart --max-age 2h
              feedarchive verify quickstart --deep
              feedarchive backfill quickstart --from beginning
            """,
        version: "feedarchive \(FeedArchiveVersion.current)",
        subcommands: [
            RunCommand.self, StatusCommand.self, CatCommand.self, VerifyCommand.self, BackfillCommand.self,
            AckGapCommand.self, CompactCommand.self, PruneCommand.self, ReplayCommand.self,
            EpochCommand.self, SetupCommand.self,
        ])

    /// ArgumentParser's own usage errors exit 64 (EX_USAGE) as DESIGN.md says, not 2.
    static func main() async {
        // glibc raises its mmap threshold to the largest block freed so far: MiB-sized buffers
        // (zstd contexts, pages built on the read-ahead thread) would then come from the heap,
        // whose memory is rarely returned, and RSS would grow with every blob. A fixed
        // threshold keeps them mmapped.
        _ = mallopt(M_MMAP_THRESHOLD, 512 << 10)
        BlobFormats.register(parquet: ParquetBlobFormat())  // archive.format: parquet
        // Take SIGINT/SIGTERM at once, before parsing, for the commands that poll the flag (a
        // signal during start-up must not kill a run about to touch the archive). The read-only
        // commands keep the default, so Ctrl-C stops a long verify or cat at once.
        if let command = CommandLine.arguments.dropFirst().first, ["run", "backfill"].contains(command) {
            stopSignal.install()
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let exitCode = self.exitCode(for: error)
            if exitCode == .success || exitCode.rawValue == 0 {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(exitCode == .validationFailure ? 64 : exitCode.rawValue)
        }
    }
}
