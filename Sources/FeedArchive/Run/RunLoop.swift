import Foundation

/// Reads a job's partitions up to their heads and commits what it reads, batch by batch: the
/// loop shared by `run` (lineage `live`) and `backfill` (lineage `backfill-<id>`). Its state is
/// the token reached so far, the open and in-flight batches, the partitions still to read and
/// the summary; a caller reads them after `read()` returns or throws.
struct RunLoop {
    let job: JobConfig
    let source: any FeedSource
    let options: RunOptions
    /// When the run's time budget ends; nil: no budget.
    let deadline: Date?
    var batcher: Batcher
    /// The token after the last change handed to the batcher (committed once the batcher settles).
    var token: ContinuationToken
    var summary: RunSummary
    /// Partitions to read, in order; a split appends its children, which read up to the parent's head.
    var queue: [String]
    /// Where each partition stops: the feed head seen at the start of the run.
    var heads: [String: String]
    /// A partition whose reads kept failing, set aside so it does not hold back the others;
    /// the run still ends with its error (the checkpoint never passes a failure).
    var failed: (partition: String, error: any Error)?

    init(
        job: JobConfig, archive: JobArchive, source: any FeedSource, options: RunOptions, lineage: String,
        token: ContinuationToken, heads: [String: String], deadline: Date?, summary: RunSummary
    ) {
        self.job = job
        self.source = source
        self.options = options
        self.deadline = deadline
        self.batcher = Batcher(job: job, archive: archive, source: source, options: options)
        self.batcher.lineage = lineage
        self.token = token
        self.summary = summary
        self.queue = token.cursors.keys.sorted()
        self.heads = heads
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

    /// Reads every partition to its head, or until the budget, a limit or a signal ends the
    /// run, and waits for the last commit. On a throw, call `abandon()`.
    ///
    /// With a time budget the partitions share it, so one slow or busy partition cannot hold
    /// back the others: each gets an equal part of the time left (what one leaves unused goes
    /// to the next), and those that used their part are read again in another pass with what
    /// then remains. Each pass keeps the order, so parents are still read before children.
    mutating func read() async throws {
        passes: while true {
            var unfinished: [String] = []
            var queued = 0
            while queued < queue.count {
                let partition = queue[queued]
                queued += 1
                let share = deadline.map {
                    Date().addingTimeInterval($0.timeIntervalSinceNow / Double(queue.count - queued + 1))
                }
                switch try await readPartition(partition, shareEnds: share, queued: queued) {
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
            try batcher.archive.flushCheckpoint()
            if let failed { throw failed.error }
        }
    }

    /// Ends the run early (signal, error): see `Batcher.abandon`. The checkpoint follows the
    /// last commit that finished (recovery would roll it forward otherwise).
    mutating func abandon() async throws {
        defer { try? batcher.archive.flushCheckpoint() }
        try await batcher.abandon()
    }

    /// Reads one partition from its cursor in the token until its head, the end of its share of
    /// the time budget, or the end of the run; its open batch is closed (or dropped when the
    /// partition is set aside inside a group) before another partition is read.
    mutating func readPartition(_ partition: String, shareEnds: Date?, queued: Int) async throws -> PartitionOutcome {
        guard let headCursor = heads[partition], var cursor = token.cursors[partition] else { return .caughtUp }
        var outcome = PartitionOutcome.caughtUp
        reading: while true {
            if options.stop.isSet { return .runEnds }
            // Limits end a run only where a batch may end, never inside a group.
            if batcher.atBoundary {
                if let deadline, Date() >= deadline {
                    summary.stoppedBy = "max-duration"
                    return .runEnds
                }
                if let limit = options.maxRecords, summary.records + batcher.pendingRecords >= limit {
                    summary.stoppedBy = "max-records"
                    return .runEnds
                }
                if let limit = options.maxBytes, summary.rawBytes + batcher.pendingBytes >= limit {
                    summary.stoppedBy = "max-bytes"
                    return .runEnds
                }
                if let shareEnds, Date() >= shareEnds {
                    outcome = .shareUsed
                    break reading
                }
            }
            var want =
                batcher.atBoundary
                ? min(job.batch.pageSize, job.batch.maxRecords - batcher.openRecords) : job.batch.pageSize
            if let limit = options.maxRecords {
                want = min(want, Int(max(1, limit - summary.records - batcher.pendingRecords)))
            }
            let readCursor = cursor
            let page: FeedPage
            let (source, retry, liveness) = (self.source, options.retry, options.liveness)
            var retries: [String] = []
            do {
                page = try await retry.run(
                    deadline: deadline, stop: options.stop,
                    onRetry: { attempt, error, delay in
                        liveness.beat()
                        retries.append(
                            "read of partition \(partition) failed (attempt \(attempt)): \(error); retrying in \(String(format: "%.1f", delay)) s"
                        )
                    }
                ) {
                    try await source.readPage(
                        partition: partition, after: readCursor, through: headCursor, maxRecords: max(1, want))
                }
                summary.warnings += retries
            } catch  where RetryPolicy.isTransient(error) && token.cursors.count > 1 && !options.stop.isSet {
                summary.warnings += retries
                summary.warnings.append(
                    "partition \(partition) set aside for this run after \(options.retry.attempts) failed reads: \(error)"
                )
                outcome = .setAside(error)
                break reading
            }
            options.liveness.beat()
            if let change = page.topology {
                // Whole pages only: the open batch ends on a cursor, so it is committed first.
                try await batcher.close(partition: partition, token: &token, summary: &summary)
                try await batcher.record(change, in: partition, token: &token, summary: &summary)
                summary.warnings.append("partition \(partition): \(change.reason)")
                for child in change.cursors.keys.sorted() where !queue[queued...].contains(child) && child != partition
                {
                    queue.append(child)
                    heads[child] = change.heads[child] ?? headCursor
                }
                guard let continued = token.cursors[partition] else { break reading }
                cursor = continued
                continue
            }
            if page.records.isEmpty { break reading }
            // The transform steps, worked out a page ahead on two threads.
            let prepared = job.transform.map { PageTransform(page: page, transform: $0) }
            defer { prepared?.cancel() }
            for index in page.records.indices {
                if options.stop.isSet { return .runEnds }
                let outcome = prepared?.outcome(index)
                // Suspends only to close a batch: not once per change.
                if try !batcher.append(page.records[index], partition: partition, token: token, prepared: outcome) {
                    try await batcher.add(
                        page.records[index], partition: partition, token: &token, summary: &summary, prepared: outcome)
                }
            }
            guard let next = page.next else {
                throw FeedArchiveError.data(
                    path: nil,
                    message:
                        "the \(source.kind) source ended a page inside a group without saying where to resume (position \(page.records.last!.position)): a source bug, nothing was committed"
                )
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
}
