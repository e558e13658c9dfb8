import Foundation

/// One batch's commit (DESIGN.md steps 6–8), handed to the commit thread.
struct CommitWork: @unchecked Sendable {
    // @unchecked: while the commit runs, the run's task touches neither this writer nor the
    // archive's manifest and checkpoint; it only creates folders (through the archive's locked
    // folder cache) and temp files. It reads them again only after the commit's
    // `BackgroundCommit` has completed (a semaphore orders the two).
    let archive: JobArchive
    let writer: BlobWriter
    /// The frame's end, started when the batch closed: it runs while earlier commits finish.
    let finishing: BlobFinish
    let relativePath: String
    let entry: ManifestEntry
}

/// A blob's frame end (`BlobWriter.end`: the rest of its input is compressed, zstd's workers
/// are waited for, its writeback starts and its encoder goes back to the pool); its fsync is
/// left to the group commit. A small blob's ends on the finishing queue while the next batch is
/// read. Two end at once, on the reading thread: a tiny blob's costs microseconds, and its
/// encoder is then back for the next batch (ended on another thread, tiny frames came back too
/// late and each next batch created a context of its own); a large blob's frees its compression
/// context before the next batch creates one (two large contexts alive at once put peak memory
/// up by a sixth on long feeds).
final class BlobFinish: @unchecked Sendable {
    // @unchecked: `outcome` is written once, before `done` is signalled, and read only after
    // a wait on `done` (which is signalled again for the next waiter).
    static let queue = DispatchQueue(label: "feedarchive.finish")
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<BlobWriter.Result, any Error>?

    /// Frames up to this size end on the reading thread.
    static let endNowLimit: Int64 = 64 << 10

    init(_ writer: BlobWriter) {
        if writer.rawBytes > Self.endNowLimit && writer.rawBytes <= BlobWriter.pooledFrameLimit {
            nonisolated(unsafe) let writer = writer
            Self.queue.async { [self] in
                outcome = Result { try writer.end() }
                done.signal()
            }
        } else {
            outcome = Result { try writer.end() }
            done.signal()
        }
    }

    /// Blocks until the frame has ended.
    func wait() -> Result<BlobWriter.Result, any Error> {
        done.wait()
        defer { done.signal() }
        return outcome!
    }

    /// For a blob that will not be committed: waits for its frame end, so no other thread
    /// touches its writer when it is aborted.
    func cancel() { _ = wait() }
}

/// The outcome of one batch's commit; it can be waited for from a thread or a task.
final class BackgroundCommit: @unchecked Sendable {
    // @unchecked: `outcome` is only touched under `lock`; `done` is signalled once it is set.
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<BlobWriter.Result, any Error>?

    fileprivate func resolve(_ result: Result<BlobWriter.Result, any Error>) {
        lock.withLock { outcome = result }
        done.signal()
    }

    /// The outcome when the commit has ended, without waiting.
    var ended: Result<BlobWriter.Result, any Error>? { lock.withLock { outcome } }

    /// Blocks the calling thread until the commit ended.
    func wait() -> Result<BlobWriter.Result, any Error> {
        done.wait()
        defer { done.signal() }
        return ended!
    }

    /// Waits without holding a thread of the cooperative pool.
    func result() async -> Result<BlobWriter.Result, any Error> {
        if let ended { return ended }
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: self.wait()) }
        }
    }
}

/// The commit thread: commits batches in the order they were submitted, each group of those
/// waiting when it gets to them at once (`JobArchive.commit(group:)`): one journal commit,
/// one fsync per folder and one manifest write for many small blobs, so the cost of a blob
/// follows the disk's latency divided by the group, not multiplied by the blobs.
final class CommitQueue: @unchecked Sendable {
    // @unchecked: `pending` is only touched under `lock`; everything else runs on `queue`.
    static let shared = CommitQueue()
    /// One serial queue per process: commits never overlap, whatever the job.
    private let queue = DispatchQueue(label: "feedarchive.commit")
    private let lock = NSLock()
    private var pending: [(work: CommitWork, commit: BackgroundCommit)] = []

    func submit(_ work: CommitWork) -> BackgroundCommit {
        let commit = BackgroundCommit()
        lock.withLock { pending.append((work, commit)) }
        queue.async { self.drain() }
        return commit
    }

    private func drain() {
        let group = lock.withLock {
            defer { pending = [] }
            return pending
        }
        var index = 0
        while index < group.count {
            let archive = group[index].work.archive
            var ended: [JobArchive.EndedBlob] = []
            var commits: [BackgroundCommit] = []
            var failure = archive.commitFailure
            while index < group.count, group[index].work.archive === archive {
                let (work, commit) = group[index]
                index += 1
                if failure != nil {
                    work.finishing.cancel()
                    commit.resolve(.failure(failure!))
                    continue
                }
                switch work.finishing.wait() {
                case .success(let result):
                    ended.append(
                        JobArchive.EndedBlob(
                            result: result, writer: work.writer, relativePath: work.relativePath, entry: work.entry,
                            // Here, not on the reading thread: a backfill keeps the checkpoint's
                            // live token, which the commit thread replaces.
                            newToken: archive.checkpointToken(after: work.entry.lineage, reaching: work.entry.toToken!))
                    )
                    commits.append(commit)
                case .failure(let error):
                    failure = error
                    commit.resolve(.failure(error))
                }
            }
            // The blobs before a failed frame end are committed; none after it (a gap).
            for (commit, outcome) in zip(commits, archive.commit(group: ended)) {
                if case .failure(let error) = outcome, archive.commitFailure == nil { archive.commitFailure = error }
                commit.resolve(outcome)
            }
            if let failure, archive.commitFailure == nil { archive.commitFailure = failure }
        }
    }
}
