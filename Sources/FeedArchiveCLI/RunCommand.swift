import ArgumentParser
import FeedArchive
import Foundation

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Archive new changes of one or more jobs, up to the feed head seen at start.",
        discussion: """
            Takes the job lock, recovers from any earlier crash, reads from the checkpoint in whole pages, writes each batch as one blob, and moves the checkpoint after the blob and its manifest line are durable. Made to be started by cron: one summary line on stderr.

            Examples:
              feedarchive run quickstart
              feedarchive run jobs/orders.yaml --max-duration 5m --metrics-file /var/lib/node_exporter/feedarchive.prom
              feedarchive run --all --log-format json
            """)

    @Argument(help: "Job names (looked up in --jobs-dir) or paths to job files.")
    var jobs: [String] = []

    @Flag(help: "Run every job file in --jobs-dir.")
    var all = false

    @Option(help: "Folder where job names are looked up.")
    var jobsDir = "jobs"

    @Option(help: "Stop reading after this long (e.g. 90s, 10m) and commit what is batched.")
    var maxDuration: String?

    @Option(help: "Stop after about this many changes (whole pages).")
    var maxRecords: Int64?

    @Option(help: "Stop after about this many uncompressed bytes (e.g. 1GB).")
    var maxBytes: String?

    @Option(help: "Log format on stderr: text or json.")
    var logFormat: LogFormat = .text

    @Option(help: "Write node_exporter textfile metrics here, atomically.")
    var metricsFile: String?

    @Option(
        help: "End a run that makes no progress (no page read, no commit) for this long, with exit 75; 0 turns it off.")
    var stallTimeout = "15m"

    @Flag(
        help:
            "Confirm that the job's transform section changed on purpose: blobs from now on are written with the new one (each manifest line records which)."
    )
    var transformChanged = false

    func validate() throws {
        if jobs.isEmpty && !all { throw ValidationError("name at least one job, or pass --all") }
        if let maxDuration, parseDuration(maxDuration) == nil {
            throw ValidationError("--max-duration '\(maxDuration)' is not a duration such as 90s or 10m")
        }
        if let maxBytes, parseByteSize(maxBytes) == nil {
            throw ValidationError("--max-bytes '\(maxBytes)' is not a size such as 1GB")
        }
        if parseDuration(stallTimeout) == nil {
            throw ValidationError("--stall-timeout '\(stallTimeout)' is not a duration such as 15m (0 turns it off)")
        }
    }

    func run() async throws {
        let log = RunLog(format: logFormat)
        try await Frontend.run(job: nil, log: log) {
            let paths =
                all
                ? try Frontend.allJobs(jobsDirectory: jobsDir)
                : try jobs.map { try Frontend.jobPath($0, jobsDirectory: jobsDir) }
            var options = RunOptions(
                maxDuration: maxDuration.flatMap(parseDuration), maxRecords: maxRecords,
                maxBytes: maxBytes.flatMap(parseByteSize), stop: stopSignal)
            options.transformChanged = transformChanged
            let session = RunSession(
                jobFiles: paths, options: options, source: .registry(.all), metricsFile: metricsFile)
            let reporter = RunReporter(
                log: log, watchdog: Watchdog(limit: parseDuration(stallTimeout) ?? 0, log: log),
                showsProgress: Frontend.stderrIsTerminal && logFormat == .text)
            let code = await session.run(observer: reporter)
            if code != 0 { throw ExitCode(code) }
        }
    }
}
