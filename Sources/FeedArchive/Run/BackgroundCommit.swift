import Foundation

/// One batch's commit (DESIGN.md steps 6–8), handed to the commit thread.
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
