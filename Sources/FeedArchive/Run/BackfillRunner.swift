import Foundation

/// `_feedarchive/backfill/<id>.json`: what a backfill covers, written when it starts, so the
/// same command resumes it (the position reached is its lineage's last manifest line).
public struct BackfillPlan: Codable, Sendable {
    public var id: String
    public var from: String
    public var until: String
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case id, from, until
        case createdAt = "created_at"
    }

    public var lineage: String { "backfill-" + id }

    /// True once its lineage's last line reached `until` in every partition it reads.
    public func isComplete(in manifest: Manifest) throws -> Bool {
        guard let last = manifest.entries.last(where: { $0.lineage == lineage }), let text = last.toToken else {
            return false
        }
        let reached = try ContinuationToken.decode(text, what: "the backfill's last to_token")
        let from = try ContinuationToken.decode(self.from, what: "the backfill's from token")
        let until = try ContinuationToken.decode(self.until, what: "the backfill's until token")
        return from.cursors.keys.allSatisfy { until.cursors[$0] == nil || reached.cursors[$0] == until.cursors[$0] }
    }
}

/// Re-archives a range of the feed into lineage `backfill-<id>` through the same commit
/// protocol as `run`, without moving the live checkpoint. Running the same command again
/// resumes it; `--max-duration` lets cron run it in slices.
public struct BackfillRunner {
    public let job: JobConfig
    public let source: any FeedSource
    public let fs: any FileSystem

    public init(job: JobConfig, source: any FeedSource, fs: any FileSystem = PosixFileSystem()) {
        self.job = job
        self.source = source
        self.fs = fs
    }

    /// `from`: `beginning`, a time, a token or a source form; `until`: a token, or nil/`checkpoint`.
    public func run(from: String, until: String?, options: RunOptions) async throws -> RunSummary {
        try await Liveness.$current.withValue(options.liveness) {
            try await runWatched(from: from, until: until, options: options)
        }
    }

    private func runWatched(from: String, until: String?, options: RunOptions) async throws -> RunSummary {
        let started = Date()
        var summary = RunSummary(job: job.name)
        let archive = JobArchive(job: job, fs: fs)
        let lock = try archive.openForWriting()
        defer { lock.release() }
        summary.recovery = try archive.recover(readingWholeManifest: true).messages
        let identity = try await source.identity()
        guard archive.identity != nil, let checkpoint = archive.checkpoint else {
            throw FeedArchiveError.usage("job \(job.name) has no archive yet: run it once before backfilling")
        }
        _ = try await archive.establishIdentity(
            source: identity, kind: source.kind, shape: job.shape(source: source.archiveShape)
        ) { throw FeedArchiveError.usage("no archive") }

        let untilText = until ?? "checkpoint"
        // The same command resumes an unfinished backfill; once one has finished, running it
        // again (the blobs were lost again) starts a fresh attempt instead of doing nothing.
        var found: BackfillPlan?
        var attempt = 0
        while found == nil {
            let key = "\(from)\n\(untilText)" + (attempt == 0 ? "" : "\n#\(attempt)")
            let id = String(sha256Hex(Array(key.utf8)).prefix(12))
            let planFile = archive.layout.metaDirectory + "/backfill/" + id + ".json"
            if let bytes = try fs.read(planFile) {
                let existing: BackfillPlan
                do {
                    existing = try JSONDecoder().decode(BackfillPlan.self, from: Data(bytes))
                } catch {
                    throw FeedArchiveError.data(
                        path: planFile, message: "corrupt backfill plan: \(describeDecodingError(error))")
                }
                if try existing.isComplete(in: archive.manifest) {
                    attempt += 1
                } else {
                    found = existing
                }
                continue
            }
            var fromToken = try await source.resolve(StartSpec.parse(from))
            try source.checkTokenBelongs(fromToken, to: identity, place: "--from")
            var untilToken: ContinuationToken
            if StartSpec.parse(from) == .beginning, untilText == "checkpoint",
                let snapshot = try await source.snapshotRange()
            {
                (fromToken, untilToken) = snapshot  // the feed does not reach back: a snapshot of the rows
            } else if untilText == "checkpoint" {
                untilToken = try ContinuationToken.decode(checkpoint.token, what: "the checkpoint token")
            } else {
                untilToken = try await source.resolve(.token(untilText))
                try source.checkTokenBelongs(untilToken, to: identity, place: "--until")
            }
            let created = BackfillPlan(
                id: id, from: fromToken.encoded, until: untilToken.encoded,
                createdAt: formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970) * 1_000_000))
            try archive.createDirectories(parentDirectory(of: planFile))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            try fs.replaceAtomically(
                planFile, with: Array(try encoder.encode(created)) + [0x0A], mode: job.archive.fileMode)
            found = created
        }
        let plan = found!
        let fromToken = try ContinuationToken.decode(plan.from, what: "the backfill's from token")
        let untilToken = try ContinuationToken.decode(plan.until, what: "the backfill's until token")

        // Where this lineage got to: its last line, or a new epoch line at its start.
        var token: ContinuationToken
        if let last = archive.manifest.entries.last(where: { $0.lineage == plan.lineage }), let text = last.toToken {
            token = try ContinuationToken.decode(text, what: "the backfill's last to_token")
        } else {
            try archive.commitLine(
                ManifestEntry(
                    kind: .epoch, lineage: plan.lineage, fromToken: plan.from, toToken: plan.from, run: archive.runID,
                    reason: "backfill from \(from) until \(untilText)"),
                newToken: checkpoint.token)
            token = fromToken
        }
        token.cursors = token.cursors.filter { fromToken.cursors[$0.key] != nil }
        summary.fromToken = token.encoded
        let head = untilToken.cursors.filter { token.cursors[$0.key] != nil && token.cursors[$0.key] != $0.value }
        if !head.isEmpty {
            try await source.checkRetained(from: token)
            let deadline = (options.maxDuration ?? job.batch.maxDuration).map { started.addingTimeInterval($0) }
            var loop = RunLoop(
                job: job, archive: archive, source: source, options: options, lineage: plan.lineage, token: token,
                heads: head, deadline: deadline, summary: summary)
            do {
                try await loop.read()
            } catch {
                try await loop.abandon()
                throw error
            }
            if options.stop.isSet {
                try await loop.abandon()
                throw FeedArchiveError.interrupted(signal: options.stop.signal)
            }
            token = loop.token
            summary = loop.summary
            summary.warnings += await source.drainWarnings()
        }
        let done = untilToken.cursors.allSatisfy { part, cursor in
            fromToken.cursors[part] == nil || token.cursors[part] == cursor
        }
        summary.stoppedBy = done ? "until (backfill complete)" : summary.stoppedBy
        if let warning = LiveFiles(archive: archive).refresh() { summary.warnings.append(warning) }
        summary.toToken = token.encoded
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }
}
