import Foundation

/// Limits and hooks for one `feedarchive run` of one job.
public struct RunOptions: Sendable {
    /// Stop reading after this many seconds and commit what is batched (overrides the job file).
    public var maxDuration: Double?
    /// Stop after about this many changes (whole pages).
    public var maxRecords: Int64?
    /// Stop after about this many uncompressed bytes (whole pages).
    public var maxBytes: Int64?
    public var stop: StopSignal
    /// Backoff for transient read errors.
    public var retry = RetryPolicy()
    /// Called after each committed blob.
    public var onCommit: (@Sendable (RunProgress) -> Void)?
    /// Beaten on every page read, retry and commit, for a watchdog.
    public var liveness = Liveness()

    public init(maxDuration: Double? = nil, maxRecords: Int64? = nil, maxBytes: Int64? = nil, stop: StopSignal = StopSignal()) {
        self.maxDuration = maxDuration
        self.maxRecords = maxRecords
        self.maxBytes = maxBytes
        self.stop = stop
    }
}

/// Progress so far, for a progress bar.
public struct RunProgress: Sendable {
    public var blobs: Int
    public var records: Int64
    public var rawBytes: Int64
}

/// What one run did; printed as the one-line summary and written to the metrics file.
public struct RunSummary: Sendable {
    public var job: String
    public var blobs = 0
    public var records: Int64 = 0
    public var rawBytes: Int64 = 0
    public var bytes: Int64 = 0
    public var fromToken: String = ""
    public var toToken: String = ""
    public var seconds: Double = 0
    /// Changes left between the checkpoint and the source head after the run, when countable.
    public var lag: Int64?
    /// Why reading stopped: `head`, `max-duration`, `max-records`, `max-bytes`.
    public var stoppedBy = "head"
    public var warnings: [String] = []
    public var recovery: [String] = []
    /// Source gauges after the run (`FeedSource.metrics`), for the metrics file.
    public var sourceMetrics: [String: Double] = [:]

    public init(job: String) { self.job = job }
}

/// The commit protocol (DESIGN.md steps 1–8) for one job and one source.
public struct ArchiveRunner {
    public let job: JobConfig
    public let source: any FeedSource
    public let fs: any FileSystem

    public init(job: JobConfig, source: any FeedSource, fs: any FileSystem = PosixFileSystem()) {
        self.job = job
        self.source = source
        self.fs = fs
    }

    public func run(_ options: RunOptions) async throws -> RunSummary {
        try await Liveness.$current.withValue(options.liveness) { try await runWatched(options) }
    }

    private func runWatched(_ options: RunOptions) async throws -> RunSummary {
        let started = Date()
        var summary = RunSummary(job: job.name)
        let archive = JobArchive(job: job, fs: fs)
        let lock = try archive.openForWriting()  // 1. the lock
        defer { lock.release() }
        summary.recovery = try archive.recover().messages  // 2. recovery
        await source.prefetch()

        let identity = try await source.identity()
        summary.warnings = try await source.warnings()
        let jobIdentity = try await archive.establishIdentity(source: identity, kind: source.kind) {
            try await source.resolve(job.start)
        }
        if archive.manifest.entries.isEmpty {
            let origin = try ContinuationToken.decode(jobIdentity.originToken, what: "the origin token in job.json")
            try archive.startEpoch(token: origin, reason: "first run")
        }
        guard let checkpoint = archive.checkpoint else {
            throw FeedArchiveError.data(path: archive.layout.checkpointFile, message: "no checkpoint after recovery")
        }
        var token = try ContinuationToken.decode(checkpoint.token, what: "the checkpoint token")
        try checkTokenBelongs(token, to: identity, place: archive.layout.checkpointFile)
        try await source.checkContinuity(from: token)
        try await source.acknowledge(token)  // a lost acknowledgement is repeated
        summary.fromToken = token.encoded

        // 3. Read up to the head seen now, in whole pages, cutting batches as we go.
        let head = try await source.head(for: token)
        let deadline = (options.maxDuration ?? job.batch.maxDuration).map { started.addingTimeInterval($0) }
        var batcher = Batcher(job: job, archive: archive, source: source, options: options)
        do {
            try await readAndCommit(head: head, deadline: deadline, options: options, batcher: &batcher, token: &token, summary: &summary)
        } catch {
            try await batcher.abandon()  // a failure before the manifest line leaves the feed where it was
            throw error
        }
        if options.stop.isSet {
            try await batcher.abandon()
            throw FeedArchiveError.interrupted(signal: options.stop.signal)
        }
        if summary.stoppedBy == "head" { try await recordHeartbeats(archive: archive, token: &token, summary: &summary) }
        summary.toToken = token.encoded
        summary.lag = try? await source.lag(from: token)
        summary.sourceMetrics = (try? await source.metrics()) ?? [:]
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    /// How reading one partition for a while ended.
    enum PartitionOutcome {
        /// Read up to its head (or the source has nothing more).
        case caughtUp
        /// Its share of the time budget is used; it is read again in the next pass.
        case shareUsed
        /// Its reads keep failing: left for this run, the run ends with this error.
        case setAside(any Error)
        /// The run's budget, a limit or a signal ends the run.
        case runEnds
    }

    func readAndCommit(
        head: [String: String], deadline: Date?, options: RunOptions, batcher: inout Batcher,
        token: inout ContinuationToken, summary: inout RunSummary
    ) async throws {
        // Partitions to read; a split appends its children, which read up to the parent's head.
        var queue = token.cursors.keys.sorted()
        var heads = head
        // A partition whose reads keep failing is set aside so it does not hold back the others;
        // the run still ends with its error (the checkpoint never passes a failure).
        var failed: (partition: String, error: any Error)?
        // With a time budget the partitions share it, so one slow or busy partition cannot hold
        // back the others: each gets an equal part of the time left (what one leaves unused goes
        // to the next), and those that used their part are read again in another pass with what
        // then remains. Each pass keeps the order, so parents are still read before children.
        passes: while true {
            var unfinished: [String] = []
            var queued = 0
            while queued < queue.count {
                let partition = queue[queued]
                queued += 1
                let share = deadline.map { Date().addingTimeInterval($0.timeIntervalSinceNow / Double(queue.count - queued + 1)) }
                let outcome = try await readPartition(
                    partition, shareEnds: share, deadline: deadline, options: options, queue: &queue, queued: queued, heads: &heads,
                    batcher: &batcher, token: &token, summary: &summary)
                switch outcome {
                case .caughtUp: break
                case .shareUsed: unfinished.append(partition)
                case .setAside(let error): if failed == nil { failed = (partition, error) }
                case .runEnds: break passes
                }
            }
            guard !unfinished.isEmpty else { break }
            if let deadline, Date() >= deadline {
                summary.stoppedBy = "max-duration"
                break
            }
            queue = unfinished.filter { token.cursors[$0] != nil }
        }
        if !options.stop.isSet {
            for partition in token.cursors.keys.sorted() where batcher.open?.partition == partition {
                try await batcher.close(partition: partition, token: &token, summary: &summary)
            }
            try await batcher.settle(summary: &summary)
            if let failed { throw failed.error }
        }
    }

    /// Reads one partition from its cursor in the token until its head, the end of its share of
    /// the time budget, or the end of the run; its open batch is closed (or dropped when the
    /// partition is set aside inside a group) before another partition is read.
    func readPartition(
        _ partition: String, shareEnds: Date?, deadline: Date?, options: RunOptions, queue: inout [String], queued: Int,
        heads: inout [String: String], batcher: inout Batcher, token: inout ContinuationToken, summary: inout RunSummary
    ) async throws -> PartitionOutcome {
        guard let headCursor = heads[partition], var cursor = token.cursors[partition] else { return .caughtUp }
        var outcome = PartitionOutcome.caughtUp
        reading: while true {
            if options.stop.isSet { return .runEnds }
            // Limits end a run only where a batch may end, never inside a group.
            if batcher.atBoundary {
                if let deadline, Date() >= deadline { summary.stoppedBy = "max-duration"; return .runEnds }
                if let limit = options.maxRecords, summary.records + batcher.pendingRecords >= limit { summary.stoppedBy = "max-records"; return .runEnds }
                if let limit = options.maxBytes, summary.rawBytes + batcher.pendingBytes >= limit { summary.stoppedBy = "max-bytes"; return .runEnds }
                if let shareEnds, Date() >= shareEnds { outcome = .shareUsed; break reading }
            }
            var want = batcher.atBoundary ? min(job.batch.pageSize, job.batch.maxRecords - batcher.openRecords) : job.batch.pageSize
            if let limit = options.maxRecords { want = min(want, Int(max(1, limit - summary.records - batcher.pendingRecords))) }
            let readCursor = cursor
            let page: FeedPage
            do {
                page = try await options.retry.run(deadline: deadline, stop: options.stop, onRetry: { attempt, error, delay in
                    options.liveness.beat()
                    summary.warnings.append("read of partition \(partition) failed (attempt \(attempt)): \(error); retrying in \(String(format: "%.1f", delay)) s")
                }) {
                    try await source.readPage(partition: partition, after: readCursor, through: headCursor, maxRecords: max(1, want))
                }
            } catch where RetryPolicy.isTransient(error) && token.cursors.count > 1 && !options.stop.isSet {
                summary.warnings.append("partition \(partition) set aside for this run after \(options.retry.attempts) failed reads: \(error)")
                outcome = .setAside(error)
                break reading
            }
            options.liveness.beat()
            if let change = page.topology {
                // Whole pages only: the open batch ends on a cursor, so it is committed first.
                try await batcher.close(partition: partition, token: &token, summary: &summary)
                try await batcher.record(change, in: partition, token: &token, summary: &summary)
                summary.warnings.append("partition \(partition): \(change.reason)")
                for child in change.cursors.keys.sorted() where !queue[queued...].contains(child) && child != partition {
                    queue.append(child)
                    heads[child] = change.heads[child] ?? headCursor
                }
                guard let continued = token.cursors[partition] else { break reading }
                cursor = continued
                continue
            }
            if page.records.isEmpty { break reading }
            for index in page.records.indices {
                if options.stop.isSet { return .runEnds }
                // Suspends only to close a batch: not once per change.
                if try !batcher.append(page.records[index], partition: partition, token: token) {
                    try await batcher.add(page.records[index], partition: partition, token: &token, summary: &summary)
                }
            }
            guard let next = page.next else {
                throw FeedArchiveError.data(path: nil, message: "the \(source.kind) source ended a page inside a group without saying where to resume (position \(page.records.last!.position)): a source bug, nothing was committed")
            }
            cursor = next
        }
        if batcher.atBoundary {
            try await batcher.close(partition: partition, token: &token, summary: &summary)
        } else {
            batcher.abort()  // set aside inside a group: its changes are read again next run
        }
        return outcome
    }

    /// Caught up: where the source can move on without data (`FeedSource.heartbeat`), a
    /// `heartbeat` line records it, the checkpoint follows, then the source is acknowledged.
    func recordHeartbeats(archive: JobArchive, token: inout ContinuationToken, summary: inout RunSummary) async throws {
        for partition in token.cursors.keys.sorted() {
            guard let cursor = token.cursors[partition] else { continue }
            // Optional housekeeping: a source that cannot write a heartbeat (no privilege, a
            // lost connection) does not fail a run whose changes are committed.
            let later: String?
            do {
                later = try await source.heartbeat(partition: partition, after: cursor)
            } catch {
                summary.warnings.append("partition \(partition): no heartbeat this run: \(error)")
                continue
            }
            guard let later, later != cursor else { continue }
            let next = token.advancing(partition, to: later)
            try archive.append(
                ManifestEntry(kind: .heartbeat, lineage: "live", part: partition, fromToken: token.encoded, toToken: next.encoded, run: archive.runID),
                newToken: next.encoded)
            token = next
            try await source.acknowledge(token)
        }
    }

    /// A token must be of this source's kind and carry this source's fingerprint.
    func checkTokenBelongs(_ token: ContinuationToken, to identity: SourceIdentity, place: String) throws {
        guard token.kind == source.kind else {
            throw FeedArchiveError.data(path: place, message: "the token is a \(token.kind) token; this job reads a \(source.kind) source")
        }
        if let fingerprint = token.source, fingerprint != identity.shortFingerprint {
            throw FeedArchiveError.data(
                path: place,
                message: "the token belongs to another source (fingerprint \(fingerprint), this source is \(identity.shortFingerprint)): it comes from another job",
                hint: "if a `feedarchive epoch` for this job was interrupted, run the same epoch command again")
        }
    }
}

/// Cuts the stream of records into batches and streams each into a blob: a batch ends where
/// a cursor exists and the next record would pass max records/bytes, move to a later hour
/// bucket, or change the partition path. Late records stay in their batch.
///
/// A closed batch is committed (DESIGN.md steps 4–7) on the commit thread while the next one
/// is read and compressed; commits stay one at a time and in feed order, because the next
/// commit, a `split`/`merge` line, and the end of a run each wait for the one in flight
/// (`settle`). The source is acknowledged (step 8) only in `settle`, after the checkpoint is
/// durable. A run killed meanwhile is a crash like any other: recovery sorts out the rest.
struct Batcher {
    let job: JobConfig
    let archive: JobArchive
    let source: any FeedSource
    let options: RunOptions
    var bucketer: TimeBucketer
    /// `live`, or `backfill-<id>`: a backfill never moves the live checkpoint.
    var lineage = "live"

    struct Open {
        var writer: BlobWriter
        var partition: String
        var directory: String
        var partitionPath: String?
        var bucket: Int64?
        var first: Position
        var last: Position
        var records: Int64 = 0
        var minTs: Int64?
        var maxTs: Int64?
        var lastCursor: String?
        var fromToken: String
    }
    var open: Open?

    /// The batch being committed on the commit thread.
    struct InFlight {
        var commit: BackgroundCommit
        var writer: BlobWriter
        var records: Int64
        var rawBytes: Int64
        /// The token after the batch: what the source is acknowledged with once it is durable.
        var token: ContinuationToken
    }
    var inFlight: InFlight?
    /// One serial queue per process: commits never overlap, whatever the job.
    static let commitQueue = DispatchQueue(label: "feedarchive.commit")

    init(job: JobConfig, archive: JobArchive, source: any FeedSource, options: RunOptions) {
        self.job = job
        self.archive = archive
        self.source = source
        self.options = options
        self.bucketer = TimeBucketer(timeZone: job.archive.timeZone)
    }

    var openRecords: Int { Int(open?.records ?? 0) }
    /// No batch is open, or the open one may end here (its last record carries a cursor).
    var atBoundary: Bool { open == nil || open?.lastCursor != nil }
    /// Changes read but not yet committed: the open batch and the one being committed.
    var pendingRecords: Int64 { (open?.records ?? 0) + (inFlight?.records ?? 0) }
    var pendingBytes: Int64 { (open?.writer.rawBytes ?? 0) + (inFlight?.rawBytes ?? 0) }

    /// Adds `record` to the open batch, or to a new one after the open batch is closed (it is
    /// full, or `record` belongs to a later hour or another partition path).
    mutating func add(_ record: FeedRecord, partition: String, token: inout ContinuationToken, summary: inout RunSummary) async throws {
        if try !append(record, partition: partition, token: token) {
            try await close(partition: partition, token: &token, summary: &summary)
            let added = try append(record, partition: partition, token: token)
            assert(added, "a batch just opened refused a change")
        }
    }

    /// `add` without suspending, for a page's changes one after another: false, with nothing
    /// added, when the open batch must be closed first.
    mutating func append(_ record: FeedRecord, partition: String, token: ContinuationToken) throws -> Bool {
        let bucket = record.timestamp.map { bucketer.bucket($0) }
        let partitionPath = job.archive.partitionPath == nil ? nil : renderPartitionPath(job.archive.partitionPath, value: record.pathValue)
        // Field by field, not `if let current = open`: copying the batch state per change
        // retains and releases each of its references.
        if open != nil && open!.lastCursor != nil {
            let full = open!.records >= job.batch.maxRecords
                || open!.writer.rawBytes + Int64(record.line.count + 1) > job.batch.maxBytes
            let laterBucket = bucket != nil && open!.bucket != nil && bucket! > open!.bucket!
            if full || laterBucket || partitionPath != open!.partitionPath { return false }
        }
        if open == nil {
            var relative = "data"
            if let partitionPath { relative += "/" + partitionPath }
            if let bucket { relative += "/" + TimeBucketer.folders(bucket) }
            let directory = archive.layout.absolute(relative)
            try archive.createDirectories(directory)
            let temp = directory + "/" + sanitizePathComponent(partition) + "_" + record.position.rawValue + ".tmp"
            let writer = try BlobWriter(
                fs: archive.fs, tempPath: temp, compression: job.archive.compression, level: job.archive.level,
                workers: job.archive.workers ?? source.defaultCompressionWorkers, mode: job.archive.fileMode)
            open = Open(
                writer: writer, partition: partition, directory: relative, partitionPath: partitionPath, bucket: bucket,
                first: record.position, last: record.position, fromToken: token.encoded)
        }
        try open!.writer.append(line: record.line)
        open!.records += 1
        open!.last = record.position
        open!.lastCursor = record.cursor
        if let ts = record.timestamp {
            open!.minTs = min(open!.minTs ?? ts, ts)
            open!.maxTs = max(open!.maxTs ?? ts, ts)
        }
        return true
    }

    /// Ends the open batch (it ends on a cursor: pages end on one) and starts its commit on the
    /// commit thread, after the one before it is durable.
    mutating func close(partition: String, token: inout ContinuationToken, summary: inout RunSummary) async throws {
        guard let batch = open else { return }
        guard let cursor = batch.lastCursor else {
            throw FeedArchiveError.data(path: nil, message: "the \(source.kind) source ended a page inside a group (position \(batch.last)): a source bug, nothing was committed")
        }
        open = nil
        do {
            try await settle(summary: &summary)
        } catch {
            batch.writer.abort(fs: archive.fs)
            throw error
        }
        if options.stop.isSet {
            // A signal came while the last commit finished: start no other, and say so by
            // throwing; a caller that went on (a split line after this batch) would skip it.
            batch.writer.abort(fs: archive.fs)
            throw FeedArchiveError.interrupted(signal: options.stop.signal)
        }
        let next = token.advancing(batch.partition, to: cursor)
        let name = sanitizePathComponent(batch.partition) + "_" + batch.first.rawValue + "_" + batch.last.rawValue + job.archive.compression.fileExtension
        let entry = ManifestEntry(
            kind: .blob, lineage: lineage, part: batch.partition, records: batch.records,
            firstPos: batch.first.rawValue, lastPos: batch.last.rawValue, fromToken: batch.fromToken, toToken: next.encoded,
            minTs: batch.minTs.map { formatRFC3339(microseconds: $0) }, maxTs: batch.maxTs.map { formatRFC3339(microseconds: $0) },
            run: archive.runID)
        let work = CommitWork(
            archive: archive, writer: batch.writer, relativePath: batch.directory + "/" + name, entry: entry,
            newToken: lineage == "live" ? next.encoded : (archive.checkpoint?.token ?? next.encoded))
        let rawBytes = batch.writer.rawBytes  // read before the writer is handed over
        inFlight = InFlight(
            commit: BackgroundCommit(on: Self.commitQueue, work), writer: batch.writer, records: batch.records,
            rawBytes: rawBytes, token: next)
        token = next
    }

    /// Waits for the commit in flight; once its checkpoint is durable, acknowledges the source
    /// (step 8) and counts the blob. A failed commit deletes its temp file and is thrown.
    mutating func settle(summary: inout RunSummary) async throws {
        guard let flight = inFlight else { return }
        inFlight = nil
        let result: BlobWriter.Result
        switch await flight.commit.result() {
        case .failure(let error):
            flight.writer.abort(fs: archive.fs)
            throw error
        case .success(let value):
            result = value
        }
        if lineage == "live" { try await source.acknowledge(flight.token) }  // 8. only after the checkpoint is durable
        summary.blobs += 1
        summary.records += flight.records
        summary.rawBytes += result.rawBytes
        summary.bytes += result.bytes
        options.liveness.beat()
        options.onCommit?(RunProgress(blobs: summary.blobs, records: summary.records, rawBytes: summary.rawBytes))
    }

    /// Writes a `split`/`merge` manifest line whose `from_token` is the state before the change
    /// and `to_token` the state after it (ended partitions gone, new cursors set), and moves the
    /// checkpoint there: verify follows a partition's chain into the partitions that replace it.
    mutating func record(_ change: TopologyChange, in partition: String, token: inout ContinuationToken, summary: inout RunSummary) async throws {
        try await settle(summary: &summary)
        if options.stop.isSet { throw FeedArchiveError.interrupted(signal: options.stop.signal) }
        var next = token
        for ended in change.ended { next.cursors[ended] = nil }
        for (part, cursor) in change.cursors { next.cursors[part] = cursor }
        let entry = ManifestEntry(
            kind: change.kind == .split ? .split : .merge, lineage: lineage, part: partition,
            fromToken: token.encoded, toToken: next.encoded, run: archive.runID, reason: change.reason)
        try archive.append(entry, newToken: lineage == "live" ? next.encoded : (archive.checkpoint?.token ?? next.encoded))
        token = next
        if lineage == "live" { try await source.acknowledge(token) }
    }

    /// Drops the open batch (a partition set aside inside a group): its temp file is deleted.
    mutating func abort() {
        open?.writer.abort(fs: archive.fs)
        open = nil
    }

    /// Ends the run early (signal, error): the open batch is dropped, and the commit in flight,
    /// a whole batch, is let finish, so no thread is left writing. When that commit failed, its
    /// temp file is deleted and its error (a full disk: exit 74) is thrown, ahead of the signal
    /// or read error that ended the run. The source is acknowledged by the next run.
    mutating func abandon() async throws {
        abort()
        guard let flight = inFlight else { return }
        inFlight = nil
        if case .failure(let error) = await flight.commit.result() {
            flight.writer.abort(fs: archive.fs)
            throw error
        }
    }
}

/// One batch's commit (DESIGN.md steps 4–7), handed to the commit thread.
struct CommitWork: @unchecked Sendable {
    // @unchecked: while the commit runs, the run's task touches neither this writer nor the
    // archive's mutable state (manifest, checkpoint, durable-folder cache); it only creates
    // folders and temp files through the file system, which is stateless or locked. It reads
    // them again only after `BackgroundCommit` has completed (a semaphore orders the two).
    let archive: JobArchive
    let writer: BlobWriter
    let relativePath: String
    let entry: ManifestEntry
    let newToken: String

    func run() throws -> BlobWriter.Result {
        try archive.commit(blob: writer, relativePath: relativePath, entry: entry, newToken: newToken)
    }
}

/// A commit running on the commit queue; its result can be waited for from a thread or a task.
final class BackgroundCommit: @unchecked Sendable {
    // @unchecked: `outcome` is written once, before `done` is signalled, and read only after
    // a wait on `done` (which is signalled again for the next waiter).
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<BlobWriter.Result, any Error>?

    init(on queue: DispatchQueue, _ work: CommitWork) {
        queue.async { [self] in
            outcome = Result { try work.run() }
            done.signal()
        }
    }

    /// Blocks the calling thread until the commit ended.
    func wait() -> Result<BlobWriter.Result, any Error> {
        done.wait()
        defer { done.signal() }
        return outcome!
    }

    /// Waits without holding a thread of the cooperative pool.
    func result() async -> Result<BlobWriter.Result, any Error> {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: self.wait()) }
        }
    }
}
