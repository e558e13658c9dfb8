import Dispatch
import Foundation
import Synchronization

/// SIGINT/SIGTERM turned into a flag the run loop polls between records, so a signal stops
/// reading, drops the blob in progress and keeps what is committed.
public final class StopSignal: Sendable {
    private let received = Atomic<Int32>(0)
    /// This flag also reports the signals the process handler caught (`install()`).
    private let installed = Atomic<Bool>(false)

    public init() {}

    /// The signal that asked us to stop, or 0.
    public var signal: Int32 {
        let own = received.load(ordering: .relaxed)
        if own != 0 || !installed.load(ordering: .relaxed) { return own }
        return caughtSignal.load(ordering: .relaxed)
    }
    public var isSet: Bool { signal != 0 }

    /// Sets the flag by hand (tests, `--max-duration` style stops are separate).
    public func raise(_ signal: Int32) { received.store(signal, ordering: .relaxed) }

    /// Routes SIGINT and SIGTERM to this flag instead of killing the process: from the moment
    /// this returns, no such signal is lost. A handler that stores the signal number (one
    /// lock-free store, async-signal-safe) is installed with `sigaction` itself. A dispatch
    /// signal source behind `SIG_IGN` was used before; a signal that came before the source
    /// was registered on the dispatch thread was discarded, and the run went on to exit 0.
    public func install() {
        installed.store(true, ordering: .relaxed)
        // The global's lazy initialisation (swift_once) must not happen inside the handler.
        _ = caughtSignal.load(ordering: .relaxed)
        for sig in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { caught in caughtSignal.store(caught, ordering: .relaxed) }
            action.sa_flags = SA_RESTART  // system calls go on; the run polls the flag
            sigemptyset(&action.sa_mask)
            sigaction(sig, &action, nil)
        }
    }
}

/// The last SIGINT/SIGTERM the process handler caught (0: none), written only by the handler.
private let caughtSignal = Atomic<Int32>(0)

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
