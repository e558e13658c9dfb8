import FeedArchive
import Foundation
import Synchronization

/// Runs `operation` with a time limit. When the limit passes first, the caller gets a
/// transient error at once and the operation is left behind: a server that dies at the wrong
/// moment can leave a postgres-nio future that never completes (an immediate-mode
/// restart during connection start-up can), and a cron job must not wait for it forever while
/// holding the job's lock. The caller closes the connection the operation used.
func withDeadline<T: Sendable>(
    _ seconds: Double, _ what: String, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let settle = Settle(continuation)
        let timer = Task {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
            if Task.isCancelled { return }
            settle(
                .failure(
                    FeedArchiveError.sourceUnavailable(
                        "\(what): no answer within \(Int(seconds)) s (source.query_timeout)")))
        }
        Task {
            do { settle(.success(try await operation())) } catch { settle(.failure(error)) }
            timer.cancel()
        }
    }
}

/// Resumes a continuation once, whichever of the operation and the timer comes first.
private final class Settle<T: Sendable>: Sendable {
    let continuation: CheckedContinuation<T, any Error>
    let done = Mutex(false)

    init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = continuation }

    func callAsFunction(_ result: Result<T, any Error>) {
        let first = done.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { continuation.resume(with: result) }
    }
}
