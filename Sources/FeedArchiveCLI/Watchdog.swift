import FeedArchive
import Foundation
import Synchronization

/// Ends a run that has stopped making progress. Every read of the source has a timeout, but a
/// hang outside them (a stuck fsync, a deadlock in a client library: one such hang held a job
/// lock for 30 minutes before it was found) would otherwise keep the lock for good, and every
/// later cron run would exit 75 while nothing is archived. The watchdog ends the process the
/// way kill -9 would, which the commit protocol is built to survive: nothing committed is lost,
/// the next run recovers and goes on.
final class Watchdog: Sendable {
    struct Watched {
        var job: JobConfig
        var liveness: Liveness
    }

    let limit: Double
    let log: RunLog
    private let watched = Mutex<Watched?>(nil)

    /// A watchdog that ends the process after `limit` seconds without progress (0: none).
    init(limit: Double, log: RunLog) {
        self.limit = limit
        self.log = log
        guard limit > 0 else { return }
        let thread = Thread { [self] in self.loop() }
        thread.name = "feedarchive-watchdog"
        thread.start()
    }

    /// Watches this job's run from now on (one job at a time; nil: none).
    func watch(_ job: JobConfig?, _ liveness: Liveness = Liveness()) {
        watched.withLock { $0 = job.map { Watched(job: $0, liveness: liveness) } }
    }

    private func loop() {
        let interval = min(1.0, max(0.05, limit / 20))
        while true {
            Thread.sleep(forTimeInterval: interval)
            guard let current = watched.withLock({ $0 }), current.liveness.idleSeconds >= limit else { continue }
            fire(current)
        }
    }

    private func fire(_ current: Watched) -> Never {
        let error = FeedArchiveError.temporary(
            "no progress for \(Int(current.liveness.idleSeconds.rounded())) s (--stall-timeout \(formatLimit)): a read or write that does not return; the process ends here, as kill -9 would: nothing committed is lost, and the next run recovers and goes on"
        )
        log.failure(job: current.job.name, error: error)
        // last_run.json is written with an fsync: when the stall is a disk that does not answer,
        // that write hangs too, so it gets a few seconds on its own thread and no more.
        let written = DispatchSemaphore(value: 0)
        let layout = ArchiveLayout(root: current.job.archive.root, job: current.job.name)
        Thread.detachNewThread {
            _ = try? RunRecord.record(
                layout, exitCode: 75, summary: nil, message: "\(error)", mode: current.job.archive.fileMode)
            written.signal()
        }
        _ = written.wait(timeout: .now() + 5)
        _exit(75)
    }

    private var formatLimit: String {
        limit >= 60 && limit.truncatingRemainder(dividingBy: 60) == 0 ? "\(Int(limit / 60))m" : "\(limit)s"
    }
}
