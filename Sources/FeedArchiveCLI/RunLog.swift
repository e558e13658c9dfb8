import ArgumentParser
import FeedArchive
import Foundation

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
            var object: [String: Any] = [
                "time": formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000))
            ]
            for (key, value) in fields { object[key] = value }
            let data =
                (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
                ?? Data()
            FileHandle.standardError.write(data + Data("\n".utf8))
        }
    }

    func summary(_ summary: RunSummary) {
        for warning in summary.warnings {
            write(
                [("level", "warning"), ("job", summary.job), ("message", warning)],
                text: "feedarchive: \(summary.job): warning: \(warning)")
        }
        for line in summary.recovery {
            write(
                [("level", "notice"), ("job", summary.job), ("message", line)],
                text: "feedarchive: \(summary.job): \(line)")
        }
        let ratio =
            summary.bytes > 0 ? String(format: " (%.1fx)", Double(summary.rawBytes) / Double(summary.bytes)) : ""
        let lag = summary.lag.map { ", lag \($0)" } ?? ""
        let compacted =
            summary.compacted.flatMap { $0.blobs > 0 ? ", compacted \($0.blobs) blobs into \($0.into)" : nil } ?? ""
        let pruned = summary.pruned.flatMap { $0 > 0 ? ", retention removed \($0) blobs" : nil } ?? ""
        let text =
            "feedarchive: \(summary.job): ok, \(summary.blobs) blobs, \(summary.records) changes\(summary.filtered > 0 ? " (\(summary.filtered) filtered)" : "")\(summary.rejected > 0 ? " (\(summary.rejected) REJECTED by the transform: see feedarchive cat --rejected)" : ""), \(humanBytes(summary.rawBytes)) -> \(humanBytes(summary.bytes))\(ratio) in \(String(format: "%.2f", summary.seconds)) s, stopped at \(summary.stoppedBy)\(lag)\(compacted)\(pruned)"
        var fields: [(String, Any)] = [
            ("level", "info"), ("event", "run"), ("job", summary.job), ("exit", 0), ("blobs", summary.blobs),
            ("records", summary.records), ("raw_bytes", summary.rawBytes), ("bytes", summary.bytes),
            ("seconds", summary.seconds), ("stopped_by", summary.stoppedBy), ("from_token", summary.fromToken),
            ("to_token", summary.toToken),
        ]
        if let lag = summary.lag { fields.append(("lag", lag)) }
        if let compacted = summary.compacted {
            fields.append(("compacted_blobs", compacted.blobs))
            fields.append(("compacted_into", compacted.into))
        }
        if let pruned = summary.pruned { fields.append(("pruned_blobs", pruned)) }
        write(fields, text: text)
    }

    func failure(job: String?, error: any Error) {
        let code = FeedArchiveError.exitCode(for: error)
        let text = "feedarchive: \(job.map { "\($0): " } ?? "")error (exit \(code)): \(error)"
        var fields: [(String, Any)] = [
            ("level", "error"), ("event", "run"), ("exit", Int(code)), ("message", "\(error)"),
        ]
        if let job { fields.append(("job", job)) }
        write(fields, text: text)
    }
}

/// Shows a `RunSession` as it goes: the log on stderr, a progress line on a terminal, and the
/// watchdog on the job that runs.
final class RunReporter: RunSessionObserver {
    let log: RunLog
    let watchdog: Watchdog
    let showsProgress: Bool
    private var progress: ProgressLine?

    init(log: RunLog, watchdog: Watchdog, showsProgress: Bool) {
        self.log = log
        self.watchdog = watchdog
        self.showsProgress = showsProgress
    }

    func willRun(_ job: JobConfig, options: inout RunOptions) {
        progress = showsProgress ? ProgressLine(job: job.name) : nil
        if let progress { options.onCommit = { progress.update($0) } }
        watchdog.watch(job, options.liveness)
    }

    func failed(job: String?, error: any Error) {
        progress?.clear()
        log.failure(job: job, error: error)
    }

    func didRun(_ job: JobConfig, summary: RunSummary?) {
        progress?.clear()
        progress = nil
        if let summary { log.summary(summary) }
        watchdog.watch(nil)
    }
}

/// A one-line progress display, only when stderr is a terminal.
final class ProgressLine: Sendable {
    let job: String
    init(job: String) { self.job = job }

    func update(_ progress: RunProgress) {
        FileHandle.standardError.write(
            Data(
                "\r\u{1B}[K\(job): \(progress.blobs) blobs, \(progress.records) changes, \(humanBytes(progress.rawBytes))"
                    .utf8))
    }

    func clear() { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
}
