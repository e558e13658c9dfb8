import Foundation

/// `feedarchive run` for one job and one source: the lock and recovery, the source checks, then
/// the `RunLoop` from the checkpoint to the head seen at the start, through the commit protocol
/// (`Commit/CommitProtocol.swift`).
public struct ArchiveRunner {
    public let job: JobConfig
    public let source: any FeedSource
    public let fs: any FileSystem

    public init(job: JobConfig, source: any FeedSource, fs: any FileSystem = PosixFileSystem()) {
        self.job = job
        self.source = source
        self.fs = fs
    }

    /// Runs the job. `onEnd` is called once the run has ended, with its summary or its error,
    /// while the run still holds the job lock: what it records of its end (last_run.json) is
    /// written before another run can start. It is not called when the lock was not taken.
    public func run(
        _ options: RunOptions, onEnd: (RunSummary?, (any Error)?) -> Void = { _, _ in }
    ) async throws -> RunSummary {
        try await Liveness.$current.withValue(options.liveness) {
            let archive = JobArchive(job: job, fs: fs)
            let lock = try archive.openForWriting()  // 1. the lock
            defer { lock.release() }
            do {
                var summary = try await runLocked(options, archive: archive)
                if let warning = LiveFiles(archive: archive).refresh() { summary.warnings.append(warning) }
                onEnd(summary, nil)
                return summary
            } catch {
                // What the run committed before it failed is listed too (the list is derived:
                // a failure to write it is no reason to change the run's outcome).
                if archive.manifest.tailSeq > 0 { LiveFiles(archive: archive).refresh() }
                onEnd(nil, error)
                throw error
            }
        }
    }

    private func runLocked(_ options: RunOptions, archive: JobArchive) async throws -> RunSummary {
        let started = Date()
        var summary = RunSummary(job: job.name)
        summary.recovery = try archive.recover().messages  // 2. recovery
        await source.prefetch()

        let identity = try await source.identity()
        summary.warnings = try await source.warnings()
        let jobIdentity = try await archive.establishIdentity(
            source: identity, kind: source.kind, shape: job.shape(source: source.archiveShape),
            transformChanged: options.transformChanged
        ) {
            try await source.resolve(job.start)
        }
        if archive.manifest.tailSeq == 0 {
            let origin = try ContinuationToken.decode(jobIdentity.originToken, what: "the origin token in job.json")
            try archive.startEpoch(token: origin, reason: "first run")
        }
        guard let checkpoint = archive.checkpoint else {
            throw FeedArchiveError.data(path: archive.layout.checkpointFile, message: "no checkpoint after recovery")
        }
        let token = try ContinuationToken.decode(checkpoint.token, what: "the checkpoint token")
        try source.checkTokenBelongs(token, to: identity, place: archive.layout.checkpointFile)
        try await source.checkContinuity(from: token)
        try await archive.acknowledge(token, to: source)  // a lost acknowledgement is repeated
        summary.fromToken = token.encoded

        // 3. Read up to the head seen now, in whole pages, cutting batches as we go.
        let head = try await source.head(for: token)
        let deadline = (options.maxDuration ?? job.batch.maxDuration).map { started.addingTimeInterval($0) }
        var loop = RunLoop(
            job: job, archive: archive, source: source, options: options, lineage: "live", token: token, heads: head,
            deadline: deadline, summary: summary)
        do {
            try await loop.read()
        } catch {
            try await loop.abandon()  // a failure before the manifest line leaves the feed where it was
            throw error
        }
        if options.stop.isSet {
            try await loop.abandon()
            throw FeedArchiveError.interrupted(signal: options.stop.signal)
        }
        if loop.summary.stoppedBy == "head" { try await recordHeartbeats(archive: archive, loop: &loop) }
        summary = loop.summary
        summary.warnings += await source.drainWarnings()
        summary.toToken = loop.token.encoded
        summary.lag = try? await source.lag(from: loop.token)
        summary.sourceMetrics = (try? await source.metrics()) ?? [:]
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    /// Caught up: where the source can move on without data (`FeedSource.heartbeat`), a
    /// `heartbeat` line records it, the checkpoint follows, then the source is acknowledged.
    func recordHeartbeats(archive: JobArchive, loop: inout RunLoop) async throws {
        for partition in loop.token.cursors.keys.sorted() {
            guard let cursor = loop.token.cursors[partition] else { continue }
            // Optional housekeeping: a source that cannot write a heartbeat (no privilege, a
            // lost connection) does not fail a run whose changes are committed.
            let later: String?
            do {
                later = try await source.heartbeat(partition: partition, after: cursor)
            } catch {
                loop.summary.warnings.append("partition \(partition): no heartbeat this run: \(error)")
                continue
            }
            guard let later, later != cursor else { continue }
            let next = loop.token.advancing(partition, to: later)
            try archive.commitLine(
                ManifestEntry(
                    kind: .heartbeat, lineage: "live", part: partition, fromToken: loop.token.encoded,
                    toToken: next.encoded,
                    run: archive.runID),
                newToken: next.encoded)
            loop.token = next
            try await archive.acknowledge(next, to: source)
        }
    }
}

extension FeedSource {
    /// A token must be of this source's kind and carry this source's fingerprint.
    func checkTokenBelongs(_ token: ContinuationToken, to identity: SourceIdentity, place: String) throws {
        guard token.kind == kind else {
            throw FeedArchiveError.data(
                path: place, message: "the token is a \(token.kind) token; this job reads a \(kind) source")
        }
        if let fingerprint = token.source, fingerprint != identity.shortFingerprint {
            throw FeedArchiveError.data(
                path: place,
                message:
                    "the token belongs to another source (fingerprint \(fingerprint), this source is \(identity.shortFingerprint)): it comes from another job",
                hint: "if a `feedarchive epoch` for this job was interrupted, run the same epoch command again")
        }
    }
}
