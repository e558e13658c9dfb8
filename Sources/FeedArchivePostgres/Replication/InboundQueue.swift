import Foundation
import NIOCore
import Synchronization

/// Bytes the replication connection's socket delivered that the reader has not taken yet.
///
/// Bounded in bytes: above `highWater` the channel stops reading from the socket (the
/// handler holds back `read()`), so the kernel's buffers fill and the walsender waits. The
/// walsender decodes while the reader encodes and compresses, but a server faster than the
/// reader never fills our memory (a 200,000-row transaction streams through a few MiB).
/// A reader's wait is marked in the connection's `StreamWatch`, whose watchdog fails it
/// (`ChannelTransport.fail`) when it lasts too long.
final class InboundQueue: Sendable {
    struct State {
        var chunks: [ByteBuffer] = []
        var bytes = 0
        /// Set when the channel closed or failed; delivered once the chunks are taken.
        var end: (any Error)?
        var waiter: CheckedContinuation<Void, any Error>?
        var readPaused = false
        /// Asks the channel's event loop to read again (set by the handler once it is added).
        var resumeReading: (@Sendable () -> Void)?
    }

    let state = Mutex(State())
    let watch: StreamWatch
    let highWater: Int
    let lowWater: Int

    init(watch: StreamWatch, highWater: Int = 8 << 20) {
        self.watch = watch
        self.highWater = highWater
        lowWater = highWater / 4
    }

    /// Below this many bytes, a waiting reader is woken a little later (`InboundHandler`)
    /// rather than at once: the walsender sends every message on its own, and waking the
    /// reader for each 100-byte message costs more than decoding it.
    static let wakeBytes = 32 << 10

    /// From the event loop: bytes arrived. True when a reader waits and was not woken because
    /// few bytes are queued: the caller wakes it soon with `wake()`.
    func push(_ chunk: ByteBuffer) -> Bool {
        let (waiter, later) = state.withLock { state -> (CheckedContinuation<Void, any Error>?, Bool) in
            guard state.end == nil else { return (nil, false) }
            state.chunks.append(chunk)
            state.bytes += chunk.readableBytes
            guard state.waiter != nil else { return (nil, false) }
            if state.bytes < Self.wakeBytes { return (nil, true) }
            defer { state.waiter = nil }
            return (state.waiter, false)
        }
        waiter?.resume()
        return later
    }

    /// Wakes a waiting reader if anything is queued.
    func wake() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.chunks.isEmpty else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// From the event loop: may the channel read more now? When not, the queue remembers to
    /// resume reading once the reader has taken enough.
    func mayRead() -> Bool {
        state.withLock { state in
            if state.bytes >= highWater && state.end == nil {
                state.readPaused = true
                return false
            }
            return true
        }
    }

    /// The channel closed or failed (or the watchdog gave up): the reader gets `error` once
    /// it has taken what arrived before.
    func finish(_ error: any Error) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if state.end == nil { state.end = error }
            state.resumeReading = nil
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Everything that arrived, waiting for at least one chunk; throws the end of the stream.
    func take() async throws -> [ByteBuffer] {
        while true {
            let (chunks, resume): ([ByteBuffer], (@Sendable () -> Void)?) = try state.withLock { state in
                if !state.chunks.isEmpty {
                    let chunks = state.chunks
                    state.chunks.removeAll(keepingCapacity: true)
                    state.bytes = 0
                    var resume: (@Sendable () -> Void)?
                    if state.readPaused {
                        state.readPaused = false
                        resume = state.resumeReading
                    }
                    return (chunks, resume)
                }
                if let end = state.end { throw end }
                return ([], nil)
            }
            resume?()
            if !chunks.isEmpty { return chunks }
            watch.state.withLock { $0.waitingSince = StreamWatch.uptime() }
            defer { watch.state.withLock { $0.waitingSince = nil } }
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ready = state.withLock { state -> Bool in
                    if !state.chunks.isEmpty || state.end != nil { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }
}
