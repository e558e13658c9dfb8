import Foundation
import Synchronization

/// What the reader, the watchdog and status updates share about one connection.
final class StreamWatch: Sendable {
    struct State {
        /// Since when the reader waits for bytes (uptime nanoseconds).
        var waitingSince: UInt64?
        /// The longest wait, in seconds, before the connection counts as lost.
        var waitLimit: Double
        /// Streaming has started (CopyBothResponse): the watchdog sends status updates.
        var streaming = false
        /// The LSN status updates report as flushed: what the archive has made durable.
        var acknowledged: UInt64 = 0
        /// When the last status update was sent (uptime nanoseconds).
        var lastStatus: UInt64 = 0
        /// The connection is done with: the watchdog thread ends.
        var stopped = false
    }

    let state: Mutex<State>

    init(waitLimit: Double) { state = Mutex(State(waitLimit: waitLimit)) }

    static func uptime() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// How long the reader has been waiting, in seconds (nil when it is not waiting).
    func waited(now: UInt64) -> Double? {
        state.withLock { state in state.waitingSince.map { Double(now &- $0) / 1e9 } }
    }
}
