import Foundation

/// Cuts the stream of records into batches and streams each into a blob: a batch ends where
/// a cursor exists and the next record would pass max records/bytes, move to a later hour
/// bucket, or change the partition path. Late records stay in their batch.
///
/// A closed batch is committed (DESIGN.md steps 6–8) on the commit thread while the next ones
/// are read and compressed; commits stay in feed order, and small blobs that close while a
/// commit runs are committed together as one group (`CommitQueue`). A large batch, a
/// `split`/`merge` line, and the end of a run wait for every commit in flight (`settle`). The
/// source is acknowledged (step 9) as each commit is settled, once its line is durable. A run
/// killed meanwhile is a crash like any other: recovery sorts out the rest.
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
        /// Changes read from the source, written or filtered (`transform` filters).
        var sourceRecords: Int64 = 0
        var filtered: [String: Int64] = [:]
        /// Changes the transform could not take, and their blob (`_feedarchive/rejected/`).
        var rejected: Int64 = 0
        var deadLetters: BlobWriter?
        var minTs: Int64?
        var maxTs: Int64?
        var lastCursor: String?
        /// The envelope of the batch's last change, for the source's `seal`.
        var lastLine: ArraySlice<UInt8> = []
        var fromToken: String
    }
    var open: Open?

    /// A batch being committed on the commit thread.
    struct InFlight {
        var commit: BackgroundCommit
        var writer: BlobWriter
        var records: Int64
        var filtered: Int64
        var rejected: Int64
        var rawBytes: Int64
        /// The token after the batch: what the source is acknowledged with once it is durable.
        var token: ContinuationToken
    }
    /// The last token a batch ended on, encoded: the next batch starts from it.
    var lastEncoded: (token: ContinuationToken, encoded: String)?

    func encoded(_ token: ContinuationToken) -> String {
        if let lastEncoded, lastEncoded.token == token { return lastEncoded.encoded }
        return token.encoded
    }

    /// Batches being committed, oldest first.
    var inFlight: [InFlight] = []
    /// Small batches closed before the oldest commit in flight ended: the largest group.
    static let maxInFlight = 64
    /// The transformed line of the change being added (`job.transform`).
    var transformed: [UInt8] = []

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
    var pendingRecords: Int64 { (open?.records ?? 0) + inFlight.reduce(0) { $0 + $1.records } }
    var pendingBytes: Int64 { (open?.writer.rawBytes ?? 0) + inFlight.reduce(0) { $0 + $1.rawBytes } }

    /// Adds `record` to the open batch, or to a new one after the open batch is closed (it is
    /// full, or `record` belongs to a later hour or another partition path).
    mutating func add(
        _ record: FeedRecord, partition: String, token: inout ContinuationToken, summary: inout RunSummary,
        prepared: (PageTransform.Outcome, PageTransform.Chunk)? = nil
    ) async throws {
        if try !append(record, partition: partition, token: token, prepared: prepared) {
            try await close(partition: partition, token: &token, summary: &summary)
            let added = try append(record, partition: partition, token: token, prepared: prepared)
            assert(added, "a batch just opened refused a change")
        }
    }

    /// `add` without suspending, for a page's changes one after another: false, with nothing
    /// added, when the open batch must be closed first.
    ///
    /// `prepared` is the record's transform outcome when it was worked out ahead (a page at a
    /// time); else the job's transform is applied here.
    mutating func append(
        _ record: FeedRecord, partition: String, token: ContinuationToken,
        prepared: (PageTransform.Outcome, PageTransform.Chunk)? = nil
    ) throws -> Bool {
        let bucket = record.timestamp.map { bucketer.bucket($0) }
        var partitionPath =
            job.archive.partitionPath == nil
            ? nil : renderPartitionPath(job.archive.partitionPath, value: record.pathValue)
        var filteredBy: Int?
        var rejection: String?
        var output = ArraySlice<UInt8>()
        if let transform = job.transform {
            var path: String?
            var failure: (any Error)?
            if let (outcome, chunk) = prepared {
                (filteredBy, rejection, failure, path) =
                    (outcome.filteredBy, outcome.rejection, outcome.failure, outcome.path)
                output = chunk.output[outcome.range]
            } else {
                do {
                    filteredBy = try transform.apply(record.line, into: &transformed, path: &path)
                    output = transformed[...]
                } catch let failed as Transform.Failure {
                    // Not archived as it is and not dropped: a dead letter with the reason.
                    rejection = failed.description
                } catch {
                    failure = error
                }
            }
            if let failure {
                throw FeedArchiveError.data(
                    path: job.file, message: "partition \(partition), position \(record.position): \(failure)",
                    hint: "nothing from this change on was committed: the source gave a line that is not an envelope")
            }
            if transform.partitions {
                // A filtered or rejected change joins the open batch's folder: it only needs a range.
                if filteredBy == nil && rejection == nil {
                    partitionPath = path
                } else if open != nil {
                    partitionPath = open!.partitionPath
                } else {
                    partitionPath = rejection == nil ? path : transform.partition(of: record.line)
                }
            }
        }
        // Field by field, not `if let current = open`: copying the batch state per change
        // retains and releases each of its references.
        if open != nil && open!.lastCursor != nil {
            let full =
                open!.sourceRecords >= job.batch.maxRecords
                || open!.writer.rawBytes + Int64(record.line.count + 1) > job.batch.maxBytes
            let laterBucket = bucket != nil && open!.bucket != nil && bucket! > open!.bucket!
            if full || laterBucket || partitionPath != open!.partitionPath { return false }
        }
        if open == nil {
            var relative = "data"
            if let partitionPath { relative += "/" + partitionPath }
            if let bucket { relative += "/" + TimeBucketer.folders(bucket) }
            let writer = try archive.beginBlob(
                relativeDirectory: relative, partition: partition, first: record.position,
                compression: job.archive.compression,
                level: job.archive.level, workers: job.archive.workers ?? source.defaultCompressionWorkers)
            open = Open(
                writer: writer, partition: partition, directory: relative, partitionPath: partitionPath, bucket: bucket,
                first: record.position, last: record.position, fromToken: encoded(token))
        }
        if let rejection {
            if open!.deadLetters == nil {
                open!.deadLetters = try archive.beginBlob(
                    relativeDirectory: ArchiveLayout.rejectedFolder, partition: "rejected-" + partition,
                    first: record.position, compression: .zstd, level: 3, workers: 1)
            }
            var letter: [UInt8] = []
            letter.reserveCapacity(record.line.count + rejection.utf8.count + 64)
            JSONText.appendLiteral(#"{"pos":"#, to: &letter)
            JSONText.appendString(record.position.rawValue, to: &letter)
            JSONText.appendLiteral(#","part":"#, to: &letter)
            JSONText.appendString(partition, to: &letter)
            JSONText.appendLiteral(#","reason":"#, to: &letter)
            JSONText.appendString(rejection, to: &letter)
            if job.transform?.redacts == true {
                // Its documents are what the redaction was to hide: they stay in the source.
                JSONText.appendLiteral(#","withheld":true,"envelope":"#, to: &letter)
                letter.append(contentsOf: Transform.withheld(record.line))
            } else {
                JSONText.appendLiteral(#","envelope":"#, to: &letter)
                letter.append(contentsOf: record.line)
            }
            letter.append(0x7D)
            try open!.deadLetters!.append(line: letter[...])
            open!.rejected += 1
        } else if let transform = job.transform {
            if let filteredBy {
                // Accounted for, not written: the batch's range still covers it.
                open!.filtered[transform.steps[filteredBy].name, default: 0] += 1
            } else {
                try open!.writer.append(line: output)
                open!.records += 1
            }
        } else {
            try open!.writer.append(line: record.line)
            open!.records += 1
        }
        open!.sourceRecords += 1
        open!.last = record.position
        open!.lastCursor = record.cursor
        open!.lastLine = record.line
        if let ts = record.timestamp {
            open!.minTs = min(open!.minTs ?? ts, ts)
            open!.maxTs = max(open!.maxTs ?? ts, ts)
        }
        return true
    }

    /// Ends the open batch (it ends on a cursor: pages end on one) and hands it to the commit
    /// thread: a small one joins the commits in flight, a large one waits for them first.
    mutating func close(partition: String, token: inout ContinuationToken, summary: inout RunSummary) async throws {
        guard let batch = open else { return }
        guard let cursor = batch.lastCursor else {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "the \(source.kind) source ended a page inside a group (position \(batch.last)): a source bug, nothing was committed"
            )
        }
        open = nil
        if let letters = batch.deadLetters {
            // Dead letters go first, on this thread, once the commits in flight are settled:
            // their line must not race the commit thread's. Killed between the two, the next run
            // reads the batch again and writes its dead letters again (`cat --rejected` shows
            // each change once).
            do {
                try await settle(summary: &summary)
                var entry = ManifestEntry(
                    kind: .rejected, lineage: lineage, part: batch.partition, records: batch.rejected,
                    firstPos: batch.first.rawValue, lastPos: batch.last.rawValue, run: archive.runID)
                entry.transform = job.transform?.hash
                let name =
                    sanitizePathComponent(batch.partition) + "_" + batch.first.rawValue + "_" + batch.last.rawValue
                    + Compression.zstd.fileExtension
                _ = try archive.commit(
                    blob: letters, relativePath: ArchiveLayout.rejectedFolder + "/" + name, entry: entry, newToken: nil)
                summary.rejected += batch.rejected
            } catch {
                letters.abort(fs: archive.fs)
                batch.writer.abort(fs: archive.fs)
                throw error
            }
        }
        let rawBytes = batch.writer.rawBytes  // read before the writer is handed over
        // A small frame ends on the finishing queue, beside the reading of the next batch; a
        // large one in its commit.
        let finishing = BlobFinish(batch.writer)
        let next: ContinuationToken
        do {
            next = try await source.seal(
                token.advancing(batch.partition, to: cursor), previous: token, partition: batch.partition,
                records: batch.sourceRecords, lastLine: batch.lastLine)
            if rawBytes > BlobWriter.pooledFrameLimit || inFlight.count >= Self.maxInFlight {
                try await settle(summary: &summary)
            } else {
                try await settleEnded(summary: &summary)
            }
        } catch {
            finishing.cancel()
            batch.writer.abort(fs: archive.fs)
            throw error
        }
        if options.stop.isSet {
            // A signal came while the last commit finished: start no other, and say so by
            // throwing; a caller that went on (a split line after this batch) would skip it.
            finishing.cancel()
            batch.writer.abort(fs: archive.fs)
            throw FeedArchiveError.interrupted(signal: options.stop.signal)
        }
        let nextEncoded = next.encoded
        lastEncoded = (next, nextEncoded)
        let name =
            sanitizePathComponent(batch.partition) + "_" + batch.first.rawValue + "_" + batch.last.rawValue
            + job.archive.compression.fileExtension
        var entry = ManifestEntry(
            kind: .blob, lineage: lineage, part: batch.partition, records: batch.records,
            firstPos: batch.first.rawValue, lastPos: batch.last.rawValue, fromToken: batch.fromToken,
            toToken: nextEncoded,
            minTs: batch.minTs.map { formatRFC3339(microseconds: $0) },
            maxTs: batch.maxTs.map { formatRFC3339(microseconds: $0) },
            run: archive.runID)
        entry.transform = job.transform?.hash
        if !batch.filtered.isEmpty { entry.filtered = batch.filtered }
        if batch.rejected > 0 { entry.rejected = batch.rejected }
        let work = CommitWork(
            archive: archive, writer: batch.writer, finishing: finishing, relativePath: batch.directory + "/" + name,
            entry: entry)
        inFlight.append(
            InFlight(
                commit: CommitQueue.shared.submit(work), writer: batch.writer, records: batch.records,
                filtered: batch.sourceRecords - batch.records - batch.rejected, rejected: batch.rejected,
                rawBytes: rawBytes, token: next))
        token = next
    }

    /// Waits for every commit in flight and settles each (`settleFirst`).
    mutating func settle(summary: inout RunSummary) async throws {
        while !inFlight.isEmpty { try await settleFirst(summary: &summary) }
    }

    /// Settles the commits in flight that have ended, oldest first, without waiting.
    mutating func settleEnded(summary: inout RunSummary) async throws {
        while let first = inFlight.first, first.commit.ended != nil { try await settleFirst(summary: &summary) }
    }

    /// Waits for the oldest commit in flight; once its line is durable, acknowledges the source
    /// (step 9) and counts the blob. A failed commit deletes its temp file and is thrown, after
    /// the commits behind it (which fail with it) have ended and deleted theirs.
    private mutating func settleFirst(summary: inout RunSummary) async throws {
        let flight = inFlight.removeFirst()
        let result: BlobWriter.Result
        switch await flight.commit.result() {
        case .failure(let error):
            flight.writer.abort(fs: archive.fs)
            for rest in inFlight {
                _ = await rest.commit.result()
                rest.writer.abort(fs: archive.fs)
            }
            inFlight = []
            throw error
        case .success(let value):
            result = value
        }
        // 9. once the line is durable; one acknowledgement for the commits settled together.
        if lineage == "live", inFlight.first?.commit.ended == nil {
            try await archive.acknowledge(flight.token, to: source)
        }
        summary.blobs += 1
        summary.records += flight.records
        summary.filtered += flight.filtered
        summary.rawBytes += result.rawBytes
        summary.bytes += result.bytes
        options.liveness.beat()
        options.onCommit?(RunProgress(blobs: summary.blobs, records: summary.records, rawBytes: summary.rawBytes))
    }

    /// Writes a `split`/`merge` manifest line whose `from_token` is the state before the change
    /// and `to_token` the state after it (ended partitions gone, new cursors set), and moves the
    /// checkpoint there: verify follows a partition's chain into the partitions that replace it.
    mutating func record(
        _ change: TopologyChange, in partition: String, token: inout ContinuationToken, summary: inout RunSummary
    ) async throws {
        try await settle(summary: &summary)
        if options.stop.isSet { throw FeedArchiveError.interrupted(signal: options.stop.signal) }
        var next = token
        for ended in change.ended { next.cursors[ended] = nil }
        for (part, cursor) in change.cursors { next.cursors[part] = cursor }
        let entry = ManifestEntry(
            kind: change.kind == .split ? .split : .merge, lineage: lineage, part: partition,
            fromToken: token.encoded, toToken: next.encoded, run: archive.runID, reason: change.reason)
        try archive.commitLine(entry, newToken: archive.checkpointToken(after: lineage, reaching: next.encoded))
        token = next
        if lineage == "live" { try await archive.acknowledge(token, to: source) }
    }

    /// Drops the open batch (a partition set aside inside a group): its temp file is deleted.
    mutating func abort() {
        open?.writer.abort(fs: archive.fs)
        open?.deadLetters?.abort(fs: archive.fs)
        open = nil
    }

    /// Ends the run early (signal, error): the open batch is dropped, and the commits in flight,
    /// whole batches, are let finish, so no thread is left writing. When one failed, its temp
    /// file is deleted and its error (a full disk: exit 74) is thrown, ahead of the signal
    /// or read error that ended the run. The source is acknowledged by the next run.
    mutating func abandon() async throws {
        abort()
        var failure: (any Error)?
        for flight in inFlight {
            if case .failure(let error) = await flight.commit.result() {
                flight.writer.abort(fs: archive.fs)
                if failure == nil { failure = error }
            }
        }
        inFlight = []
        if let failure { throw failure }
    }
}
