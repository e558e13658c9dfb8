import ArgumentParser
import FeedArchive
import FeedArchiveCosmos
import FeedArchivePostgres
import FeedArchiveSQLite
import Foundation

struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Apply an archive's changes to a target table, up to now or to a point in time.",
        discussion: """
            A replay job file names the archive job it reads (archive_job), optionally one source table (source_table), and its target (target: {kind: sqlite, path, table}, or kind: postgres with the connection settings of a PostgreSQL source). Changes are applied in feed order per partition: c, u, r and w upsert by key, d deletes by key, t empties the table, an update that changed the key deletes the old key's row. By default the table holds key (the envelope's key, JSON text) and doc (the document after the change, JSON text); target.columns maps top-level fields to typed columns (text, integer, real, boolean, json, timestamp) and target.key names the key columns among them. A change whose value does not fit its column is not applied and not dropped: it goes to _feedarchive_replay_rejected with the reason, and is counted in the summary, the metrics and --status.

            A cosmos target (target: {kind: cosmos, endpoint, key or key_file, database, container, partition_key}) upserts each document, without its system properties, into the partition its own value at partition_key names, so a container can move to another partition key; a delete finds the document's partition from the previous image, or else by a query on its id. There is no transaction across partitions: a batch's documents are written first (the last change of an id wins), then its dead letters and its positions (documents _feedarchive_replay.<replay> and _feedarchive_replay_rejected.<replay>.<part>.<pos> in the container's partition _feedarchive); a killed replay writes the batch again, the same documents. --from-scratch forgets the positions and dead letters of a cosmos target and keeps the documents.

            The positions applied are kept in the target (_feedarchive_replay), in the same transaction as the rows, so a replay killed at any point resumes exactly where it committed; run it from cron to keep the target up to date. It reads the archive, never the source. Exit codes as for run: 0 done, 65 the archive cannot be replayed as it is, 75 another replay of this job holds its lock, 78 the job file is wrong.

            Examples:
              feedarchive replay orders-replica.yaml
              feedarchive replay orders-replica.yaml --until 2026-11-23T14:00:00Z --from-scratch
              feedarchive replay orders-replica.yaml --status
            """)

    @Argument(help: "The replay job file.")
    var job: String

    @Option(
        help:
            "Stop each partition at its first change stamped at or after this time (RFC 3339), or where the archive stood when this token (a run's checkpoint) was its checkpoint."
    )
    var until: String?

    @Flag(
        help:
            "Empty the target table, its dead letters and its positions first (a cosmos target keeps its documents)."
    )
    var fromScratch = false

    @Flag(
        help: "Print what the target has applied against what the archive holds, and its dead letters; change nothing.")
    var status = false

    @Option(help: "Write node_exporter textfile metrics here, atomically.")
    var metricsFile: String?

    func run() async throws {
        try await Frontend.run(job: job) {
            let replay = try ReplayJob.load(path: job)
            var cut: Int64?
            var token: String?
            if let until {
                if let date = parseRFC3339(until) {
                    cut = Int64(date.timeIntervalSince1970 * 1_000_000)
                } else if until.contains(":") && !until.contains(" ") && until.first?.isLetter == true {
                    token = until
                } else {
                    throw FeedArchiveError.usage(
                        "--until \(until): neither a time (2026-11-23T14:00:00Z) nor a token (sqlite:eyJj…)")
                }
            }
            let target: any ReplayTarget
            switch replay.targetKind {
            case "sqlite": target = try SQLiteReplayTarget.make(replay)
            case "postgres": target = try await PostgresReplayTarget.make(replay)
            case "cosmos": target = try await CosmosReplayTarget.make(replay)
            default:
                throw FeedArchiveError.badJobFile(
                    place: job, message: "target.kind \(replay.targetKind): must be sqlite, postgres or cosmos")
            }
            do {
                try await apply(replay, into: target, until: cut, token: token)
            } catch {
                await target.close()
                throw error
            }
            await target.close()
        }
    }

    func apply(_ replay: ReplayJob, into target: any ReplayTarget, until cut: Int64?, token: String?) async throws {
        let replayer = Replayer(job: replay, target: target)
        if status {
            guard cut == nil && token == nil && !fromScratch else {
                throw FeedArchiveError.usage(
                    "--status reports what the target holds; it takes no --until or --from-scratch")
            }
            try await printStatus(replayer)
            return
        }
        let started = Date()
        let summary: ReplaySummary
        do {
            summary = try await replayer.run(until: cut, untilToken: token, fromScratch: fromScratch)
        } catch {
            try? writeMetrics(
                replay, summary: nil, status: nil, exitCode: FeedArchiveError.exitCode(for: error), started: started)
            throw error
        }
        var notes: [String] = []
        if summary.passed > 0 { notes.append("\(summary.passed) of other tables passed over") }
        if summary.held > 0 { notes.append("stopped at --until") }
        let tail = notes.isEmpty ? "" : " (\(notes.joined(separator: ", ")))"
        FileHandle.standardError.write(
            Data(
                "feedarchive: \(replay.name): replayed \(summary.applied) changes from \(summary.blobs) blobs of \(replay.archive.name)\(tail)\n"
                    .utf8))
        if summary.unmatched, let table = replay.sourceTable {
            FileHandle.standardError.write(
                Data(
                    "feedarchive: \(replay.name): warning: none of the \(summary.passed) changes read was of source_table \(table), and the target held nothing of it before: check source_table against the archive's tables (`feedarchive cat \(replay.archive.name) | head`)\n"
                        .utf8))
        }
        if summary.rejected > 0 {
            FileHandle.standardError.write(
                Data(
                    "feedarchive: \(replay.name): warning: \(summary.rejected) changes could not become rows and were not applied: they are in _feedarchive_replay_rejected with the reason; mend the mapping (target.columns) and replay --from-scratch\n"
                        .utf8))
        }
        let after = try? await replayer.status()
        try? writeMetrics(replay, summary: summary, status: after, exitCode: 0, started: started)
    }

    func printStatus(_ replayer: Replayer) async throws {
        let state = try await replayer.status()
        var out =
            "replay \(replayer.job.name) of \(replayer.job.archive.name) into \(replayer.job.targetKind) \(replayer.target.shape.table)\n"
        for part in state.partitions {
            out +=
                "  \(part.part): applied \(part.applied ?? "nothing"), archived \(part.archived ?? "nothing"), behind \(part.behind)\n"
        }
        out += "  behind: \(state.behind) changes; dead letters: \(state.rejected)\n"
        FileHandle.standardOutput.write(Data(out.utf8))
    }

    func writeMetrics(
        _ replay: ReplayJob, summary: ReplaySummary?, status: Replayer.Status?, exitCode: Int32, started: Date
    ) throws {
        guard let metricsFile else { return }
        let label = replay.name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
            of: "\"", with: "\\\"")
        var text = ""
        func metric(_ name: String, _ help: String, _ value: Double?) {
            guard let value else { return }
            text += "# HELP feedarchive_replay_\(name) \(help)\n# TYPE feedarchive_replay_\(name) gauge\n"
            text +=
                "feedarchive_replay_\(name){replay=\"\(label)\"} \(value == value.rounded() ? String(Int64(value)) : String(value))\n"
        }
        let now = Date().timeIntervalSince1970
        metric("last_run_timestamp_seconds", "Unix time of the last replay.", now)
        // The last success survives a failed replay: it is read back from the file.
        let previous = (try? String(contentsOfFile: metricsFile, encoding: .utf8))?.split(separator: "\n").first {
            $0.hasPrefix("feedarchive_replay_last_success_timestamp_seconds{")
        }.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        metric(
            "last_success_timestamp_seconds", "Unix time of the last replay that exited 0.",
            exitCode == 0 ? now : previous)
        metric("last_exit_code", "Exit code of the last replay.", Double(exitCode))
        metric("last_run_duration_seconds", "Duration of the last replay.", now - started.timeIntervalSince1970)
        metric("last_run_changes", "Changes applied by the last replay.", summary.map { Double($0.applied) })
        metric(
            "last_run_rejected", "Changes the last replay sent to the dead letters.",
            summary.map { Double($0.rejected) })
        metric("rejected", "Dead letters of this replay in its target.", status.map { Double($0.rejected) })
        metric(
            "lag_changes", "Changes archived and not yet applied (by whole blobs).", status.map { Double($0.behind) })
        try PosixFileSystem().replaceAtomically(metricsFile, with: Array(text.utf8), mode: 0o644)
    }
}
