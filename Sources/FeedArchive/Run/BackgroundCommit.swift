import Foundation

/// One batch's commit (DESIGN.md steps 6–8), handed to the commit thread.
struct CommitWork: @unchecked Sendable {
    // @unchecked: while the commit runs, the run's task touches neither this writer nor the
    // archive's mutable state (manifest, checkpoint, durable-folder cache); it only creates
    // folders and temp files through the file system, which is stateless or locked. It reads
    // them again only after `BackgroundCommit` has completed (a semaphore orders the two).
    let archive: JobArchive
    let writer: BlobWriter
    /// The frame's end and the temp file's fsync (step 6's first half), started when the batch
    /// closed: it runs while the commit before this one finishes.
    let finishing: BlobFinish
    let relativePath: String
    let entry: ManifestEntry
    let newToken: String

    func run() throws -> BlobWriter.Result {
        let result = try finishing.wait().get()
        return try archive.commit(
            finished: result, writer: writer, relativePath: relativePath, entry: entry, newToken: newToken)
    }
}

/// A blob's `BlobWriter.finish` on the finishing queue: a small blob's fsync then overlaps the
/// commit of the blob before it (its rename, folder fsync and manifest line) instead of
/// following it. Blobs still commit one at a time, in order, each after its own fsync. A large
/// blob is finished by its commit, as before: its fsync is paid for by many changes, and a
/// second compression context in flight would cost several MiB of memory.
final class BlobFinish: @unchecked Sendable {
    // @unchecked: `outcome` is written once, before `done` is signalled, and read only after
    // a wait on `done` (which is signalled again for the next waiter).
    static let queue = DispatchQueue(label: "feedarchive.finish")
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<BlobWriter.Result, any Error>?

    init(_ writer: BlobWriter) {
        nonisolated(unsafe) let writer = writer
        let work: @Sendable () -> Void = { [self] in
            outcome = Result { try writer.finish() }
            done.signal()
        }
        if writer.rawBytes <= BlobWriter.pooledFrameLimit {
            Self.queue.async(execute: work)
        } else {
            later = work
        }
    }

    /// The finish of a large blob, run by the first `wait` (on the commit thread).
    private var later: (@Sendable () -> Void)?

    /// Blocks the calling thread until the blob is finished.
    func wait() -> Result<BlobWriter.Result, any Error> {
        if let work = later {
            later = nil
            work()
        }
        done.wait()
        defer { done.signal() }
        return outcome!
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
