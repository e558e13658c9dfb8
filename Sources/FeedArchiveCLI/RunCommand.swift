import ArgumentParser
import FeedArchive
import Foundation

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Archive new changes of one or more jobs, up to the feed head seen at start.",
        discussion: """
            Takes the job lock, recovers from any earlier crash, reads from the checkpoint in
            whole pages, writes each batch as one blob, and moves the checkpoint after the blob and
            its manifest line are durable. Made to be started by cron: one summary line on stderr.

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

    @Option(help: "End a run that makes no progress (no page read, no commit) for this long, with exit 75; 0 turns it off.")
    var stallTimeout = "15m"

    func validate() throws {
        if jobs.isEmpty && !all { throw ValidationError("name at least one job, or pass --all") }
        if let maxDuration, parseDuration(maxDuration) == nil { throw ValidationError("--max-duration '\(maxDuration)' is not a duration such as 90s or 10m") }
        if let maxBytes, parseByteSize(maxBytes) == nil { throw ValidationError("--max-bytes '\(maxBytes)' is not a size such as 1GB") }
        if parseDuration(stallTimeout) == nil { throw ValidationError("--stall-timeout '\(stallTimeout)' is not a duration such as 15m (0 turns it off)") }
    }

    func run() async throws {
        let stop = stopSignal
        let log = RunLog(format: logFormat)
        let paths = try await Frontend.run(job: nil, log: log) {
            all ? try Frontend.allJobs(jobsDirectory: jobsDir) : try jobs.map { try Frontend.jobPath($0, jobsDirectory: jobsDir) }
        }
        var firstFailure: Int32 = 0
        // An interruption outranks an earlier job's failure: whoever reads the exit code must
        // learn that the jobs after it were not run (or not finished), whatever failed before.
        var interruption: Int32?
        var metrics: [MetricsFile.JobMetrics] = []
        let watchdog = Watchdog(limit: parseDuration(stallTimeout) ?? 0, log: log)
        for (index, path) in paths.enumerated() {
            if stop.isSet {
                // A signal before this job started: neither it nor the ones after it are run,
                // and each says so (a cron wrapper must not take them for finished runs).
                let error = FeedArchiveError.interrupted(signal: stop.signal)
                for skipped in paths[index...] { log.failure(job: skipped, error: error) }
                interruption = FeedArchiveError.exitCode(for: error)
                break
            }
            let code = await runOne(path: path, stop: stop, log: log, watchdog: watchdog, metrics: &metrics)
            if stop.isSet && (code == 130 || code == 143) {
                interruption = code
            } else if firstFailure == 0 {
                firstFailure = code
            }
        }
        if let interruption { firstFailure = interruption }
        if let metricsFile {
            do {
                try MetricsFile.write(metrics, to: metricsFile)
            } catch {
                log.failure(job: nil, error: error)
                if firstFailure == 0 { firstFailure = 74 }
            }
        }
        if firstFailure != 0 { throw ExitCode(firstFailure) }
    }

    private func runOne(path: String, stop: StopSignal, log: RunLog, watchdog: Watchdog, metrics: inout [MetricsFile.JobMetrics]) async -> Int32 {
        let job: JobConfig
        do {
            job = try JobConfig.load(path: path)
        } catch {
            log.failure(job: path, error: error)
            return FeedArchiveError.exitCode(for: error)
        }
        var options = RunOptions(
            maxDuration: maxDuration.flatMap(parseDuration), maxRecords: maxRecords, maxBytes: maxBytes.flatMap(parseByteSize), stop: stop)
        let progress = Frontend.stderrIsTerminal && logFormat == .text ? ProgressLine(job: job.name) : nil
        if let progress { options.onCommit = { progress.update($0) } }
        var summary: RunSummary?
        var code: Int32 = 0
        var message: String?
        var locked = false
        watchdog.watch(job, options.liveness)
        defer { watchdog.watch(nil) }
        do {
            summary = try await Frontend.withSource(job) { source in
                try await ArchiveRunner(job: job, source: source).run(options)
            }
        } catch {
            code = FeedArchiveError.exitCode(for: error)
            message = "\(error)"
            if case .locked = error as? FeedArchiveError { locked = true }
            progress?.clear()
            log.failure(job: job.name, error: error)
        }
        progress?.clear()
        if let summary { log.summary(summary) }
        let layout = ArchiveLayout(root: job.archive.root, job: job.name)
        if !locked {  // the run holding the lock owns last_run.json
            if let record = try? RunRecord.record(layout, exitCode: code, summary: summary, message: message, mode: job.archive.fileMode) {
                let manifest = (try? ManifestStore(directory: layout.manifestDirectory, fs: PosixFileSystem(), fileMode: 0o640).read().0) ?? Manifest()
                metrics.append(MetricsFile.JobMetrics(job: job.name, record: record, totals: ArchiveTotals(manifest), source: summary?.sourceMetrics ?? [:]))
            }
        }
        return code
    }
}

enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// The run's stderr output: warnings, recovery actions, one summary line per job.
struct RunLog {
    let format: LogFormat

    func write(_ fields: [(String, Any)], text: String) {
        switch format {
        case .text:
            FileHandle.standardError.write(Data((text + "\n").utf8))
        case .json:
            var object: [String: Any] = ["time": formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000))]
            for (key, value) in fields { object[key] = value }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            FileHandle.standardError.write(data + Data("\n".utf8))
        }
    }

    func summary(_ summary: RunSummary) {
        for warning in summary.warnings {
            write([("level", "warning"), ("job", summary.job), ("message", warning)], text: "feedarchive: \(summary.job): warning: \(warning)")
        }
        for line in summary.recovery {
            write([("level", "notice"), ("job", summary.job), ("message", line)], text: "feedarchive: \(summary.job): \(line)")
        }
        let ratio = summary.bytes > 0 ? String(format: " (%.1fx)", Double(summary.rawBytes) / Double(summary.bytes)) : ""
        let lag = summary.lag.map { ", lag \($0)" } ?? ""
        let text = "feedarchive: \(summary.job): ok, \(summary.blobs) blobs, \(summary.records) changes, \(humanBytes(summary.rawBytes)) -> \(humanBytes(summary.bytes))\(ratio) in \(String(format: "%.2f", summary.seconds)) s, stopped at \(summary.stoppedBy)\(lag)"
        var fields: [(String, Any)] = [
            ("level", "info"), ("event", "run"), ("job", summary.job), ("exit", 0), ("blobs", summary.blobs),
            ("records", summary.records), ("raw_bytes", summary.rawBytes), ("bytes", summary.bytes),
            ("seconds", summary.seconds), ("stopped_by", summary.stoppedBy), ("from_token", summary.fromToken),
            ("to_token", summary.toToken),
        ]
        if let lag = summary.lag { fields.append(("lag", lag)) }
        write(fields, text: text)
    }

    func failure(job: String?, error: any Error) {
        let code = FeedArchiveError.exitCode(for: error)
        let text = "feedarchive: \(job.map { "\($0): " } ?? "")error (exit \(code)): \(error)"
        var fields: [(String, Any)] = [("level", "error"), ("event", "run"), ("exit", Int(code)), ("message", "\(error)")]
        if let job { fields.append(("job", job)) }
        write(fields, text: text)
    }
}

/// A one-line progress display, only when stderr is a terminal.
final class ProgressLine: Sendable {
    let job: String
    init(job: String) { self.job = job }

    func update(_ progress: RunProgress) {
        FileHandle.standardError.write(Data("\r\u{1B}[K\(job): \(progress.blobs) blobs, \(progress.records) changes, \(humanBytes(progress.rawBytes))".utf8))
    }

    func clear() { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
}
