/// What a `RunSession` tells its caller as it goes, in order: for the log, a progress line and
/// a watchdog.
public protocol RunSessionObserver {
    /// `job` is about to run with `options`; the observer may set `onCommit` and watch `liveness`.
    func willRun(_ job: JobConfig, options: inout RunOptions)
    /// Something failed: a job's run (`job` is its name), a job file that cannot be read or a
    /// job not run because of a signal (`job` is the file's path), or the metrics file (nil).
    func failed(job: String?, error: any Error)
    /// `job`'s run ended and its end is recorded; `summary` is nil when it failed.
    func didRun(_ job: JobConfig, summary: RunSummary?)
}

/// One `feedarchive run` as cron starts it: job files run one after another, each run's end
/// recorded in the job's `last_run.json`, one exit code for all, and optionally the node_exporter
/// metrics file.
public struct RunSession {
    /// The job files, in the order they run.
    public var jobFiles: [String]
    /// Limits and the stop signal every job runs with; each job gets its own `liveness`.
    public var options: RunOptions
    public var source: SourceProvider
    /// Where to write the metrics of the jobs whose run was recorded; nil: nowhere.
    public var metricsFile: String?
    public var fs: any FileSystem

    public init(
        jobFiles: [String], options: RunOptions, source: SourceProvider, metricsFile: String? = nil,
        fs: any FileSystem = PosixFileSystem()
    ) {
        self.jobFiles = jobFiles
        self.options = options
        self.source = source
        self.metricsFile = metricsFile
        self.fs = fs
    }

    /// Runs every job and returns the exit code: 0 when all succeeded, else the first failure's.
    /// A signal outranks an earlier failure (whoever reads the code must learn that the jobs
    /// after it were not run, or not finished): a job the signal interrupted ends the session
    /// with 130/143, and a signal before a job starts reports it and every later job as not run.
    /// A metrics file that cannot be written is exit 74 when nothing else failed.
    public func run(observer: some RunSessionObserver) async -> Int32 {
        var firstFailure: Int32 = 0
        var interruption: Int32?
        var metrics: [MetricsFile.JobMetrics] = []
        for (index, path) in jobFiles.enumerated() {
            if options.stop.isSet {
                let error = FeedArchiveError.interrupted(signal: options.stop.signal)
                for skipped in jobFiles[index...] { observer.failed(job: skipped, error: error) }
                interruption = error.exitCode
                break
            }
            let code = await runJob(path: path, observer: observer, metrics: &metrics)
            if options.stop.isSet && (code == 130 || code == 143) {
                interruption = code
            } else if firstFailure == 0 {
                firstFailure = code
            }
        }
        if let interruption { firstFailure = interruption }
        if let metricsFile {
            do {
                try MetricsFile.write(metrics, to: metricsFile, fs: fs)
            } catch {
                observer.failed(job: nil, error: error)
                if firstFailure == 0 { firstFailure = 74 }
            }
        }
        return firstFailure
    }

    /// One job: its run, then its `last_run.json` and metrics. A run refused because another
    /// holds the job lock records nothing: `last_run.json` belongs to the run holding the lock.
    private func runJob(path: String, observer: some RunSessionObserver, metrics: inout [MetricsFile.JobMetrics]) async
        -> Int32
    {
        let job: JobConfig
        do {
            job = try JobConfig.load(path: path)
        } catch {
            observer.failed(job: path, error: error)
            return FeedArchiveError.exitCode(for: error)
        }
        var options = self.options
        options.liveness = Liveness()
        observer.willRun(job, options: &options)
        var summary: RunSummary?
        var code: Int32 = 0
        var locked = false
        let layout = ArchiveLayout(root: job.archive.root, job: job.name)
        // The run's end is recorded while it still holds the lock (a run starting right after
        // must not take a half-written last_run.json for a stray); a run that failed before
        // taking the lock is recorded after.
        var record: RunRecord?
        var recorded = false
        let fs = self.fs
        func recordEnd(_ summary: RunSummary?, _ error: (any Error)?) {
            recorded = true
            let code = error.map { FeedArchiveError.exitCode(for: $0) } ?? 0
            record = try? RunRecord.record(
                layout, exitCode: code, summary: summary, message: error.map { "\($0)" }, mode: job.archive.fileMode,
                fs: fs)
        }
        do {
            summary = try await source.withSource(job) { source in
                try await ArchiveRunner(job: job, source: source, fs: fs).run(options, onEnd: recordEnd)
            }
        } catch {
            code = FeedArchiveError.exitCode(for: error)
            if case .locked = error as? FeedArchiveError { locked = true }
            observer.failed(job: job.name, error: error)
            if !recorded && !locked { recordEnd(nil, error) }
        }
        // `compact:` in the job: what closed is compacted after a successful run, under the
        // job lock again (a run that failed or was stopped leaves it to the next).
        if let settings = job.compaction, code == 0, !options.stop.isSet, summary != nil {
            do {
                let report = try Compactor(job: job, fs: fs).compact(
                    targetSize: settings.targetSize, after: settings.after, format: settings.format)
                summary?.compacted = (report.blobs.reduce(0) { $0 + $1.replaces.count }, report.blobs.count)
                summary?.warnings += report.skipped.map {
                    $0.hasPrefix("held back") ? "compaction \($0)" : "compaction left as it is: \($0)"
                }
            } catch {
                code = FeedArchiveError.exitCode(for: error)
                observer.failed(job: job.name, error: error)
            }
        }
        // `retention:` in the job: blobs whose changes are all older than the retention are
        // removed after a successful run, at most once an hour (it reads the whole manifest).
        if let retention = job.retention, code == 0, !options.stop.isSet, summary != nil {
            do {
                if let report = try Pruner(job: job, fs: fs).pruneIfDue(retention: retention) {
                    summary?.pruned = report.blobs.count
                    summary?.warnings += report.held.map { "retention held back: \($0)" }
                }
            } catch {
                code = FeedArchiveError.exitCode(for: error)
                observer.failed(job: job.name, error: error)
            }
        }
        if let record {
            // The checkpoint's totals and the lines after it: not the whole manifest.
            let archive = JobArchive(job: job, fs: fs)
            var totals = ArchiveTotals()
            do {
                _ = try archive.loadTail()
                totals = try archive.totalsAtTail()
            } catch {}  // an archive that cannot be read shows no totals; the run's error says why
            metrics.append(
                MetricsFile.JobMetrics(
                    job: job.name, record: record, totals: totals,
                    source: summary?.sourceMetrics ?? [:]))
        }
        observer.didRun(job, summary: summary)
        return code
    }
}
