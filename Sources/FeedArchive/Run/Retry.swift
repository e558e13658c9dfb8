import Foundation

/// Exponential backoff with full jitter for transient source errors (connection lost, busy,
/// throttled), inside the run's time budget. The checkpoint never passes a failure: a read
/// that keeps failing ends the run with the last error, nothing after it committed.
public struct RetryPolicy: Sendable {
    public var attempts: Int
    public var initialDelay: Double
    public var maxDelay: Double

    public init(attempts: Int = 6, initialDelay: Double = 0.2, maxDelay: Double = 10) {
        self.attempts = attempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// Errors worth another try (`FeedArchiveError.isRetryable`).
    public static func isTransient(_ error: any Error) -> Bool {
        (error as? FeedArchiveError)?.isRetryable ?? false
    }

    /// Runs `operation`, retrying transient failures until attempts, the deadline or a stop signal end it.
    public func run<T>(
        deadline: Date?, stop: StopSignal, onRetry: (Int, any Error, Double) -> Void = { _, _, _ in },
        _ operation: () async throws -> T
    ) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await operation()
            } catch {
                guard Self.isTransient(error), attempt < attempts, !stop.isSet else { throw error }
                let ceiling = min(maxDelay, initialDelay * pow(2, Double(attempt - 1)))
                let delay = Double.random(in: ceiling / 2...ceiling)
                if let deadline, Date().addingTimeInterval(delay) >= deadline { throw error }
                onRetry(attempt, error, delay)
                try? await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
                attempt += 1
            }
        }
    }
}
