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
    /// `run --transform-changed`: the job's transform section changed on purpose.
    public var transformChanged = false

    public init(
        maxDuration: Double? = nil, maxRecords: Int64? = nil, maxBytes: Int64? = nil, stop: StopSignal = StopSignal()
    ) {
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
    /// Changes the job's transform filters left out (accounted for in the manifest).
    public var filtered: Int64 = 0
    /// Changes the transform could not take: in the dead letters (`cat --rejected`).
    public var rejected: Int64 = 0
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
    /// With `compact:` in the job: blobs merged after the run, and the blobs they became.
    public var compacted: (blobs: Int, into: Int)?
    /// With `retention:` in the job: blobs the retention removed after the run.
    public var pruned: Int?
    /// Source gauges after the run (`FeedSource.metrics`), for the metrics file.
    public var sourceMetrics: [String: Double] = [:]

    public init(job: String) { self.job = job }
}
