import Dispatch
import Foundation
import Synchronization

/// SIGINT/SIGTERM turned into a flag the run loop polls between records, so a signal stops
/// reading, drops the blob in progress and keeps what is committed.
public final class StopSignal: Sendable {
    private let received = Atomic<Int32>(0)

    public init() {}

    /// The signal that asked us to stop, or 0.
    public var signal: Int32 { received.load(ordering: .relaxed) }
    public var isSet: Bool { signal != 0 }

    /// Sets the flag by hand (tests, `--max-duration` style stops are separate).
    public func raise(_ signal: Int32) { received.store(signal, ordering: .relaxed) }

    /// Routes SIGINT and SIGTERM to this flag instead of killing the process.
    public func install() {
        for sig in [SIGINT, SIGTERM] {
            Foundation.signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self] in self?.raise(sig) }
            source.resume()
            installedSignalSources.append(source)
        }
    }
}

/// Keeps the dispatch sources alive for the life of the process. Written only by `install()`,
/// which the CLI calls once at start-up before any concurrency, hence the unsafe marking.
nonisolated(unsafe) private var installedSignalSources: [any DispatchSourceSignal] = []

/// When a run last showed it is alive (a page read, a retry, a commit). A watchdog compares it
/// with the clock: a run that is stuck (a read that never returns, an fsync that hangs) would
/// otherwise hold the job lock for good and every later cron run would exit 75.
public final class Liveness: Sendable {
    private let last = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)

    /// The liveness of the run the current task works for. Sources beat it in loops that can
    /// go long without returning a page: WAL with no published change, keepalives, throttling.
    @TaskLocal public static var current: Liveness?

    public init() {}

    public func beat() { last.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed) }

    /// Seconds since the last beat.
    public var idleSeconds: Double {
        let now = DispatchTime.now().uptimeNanoseconds
        let then = last.load(ordering: .relaxed)
        return now > then ? Double(now - then) / 1e9 : 0
    }
}
