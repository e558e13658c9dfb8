import FeedArchive
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A SwiftNIO channel under a replication connection: for TCP, where TLS may be negotiated
/// (`NIOSSLClientHandler`). The event loop reads the socket into an `InboundQueue`; the
/// reader takes what it holds.
final class ChannelTransport: ReplicationTransport {
    let channel: any Channel
    let queue: InboundQueue
    /// Chunks taken from the queue and not read yet, last first (the reader's alone).
    private let taken = Mutex<[ByteBuffer]>([])

    private init(channel: any Channel, queue: InboundQueue) {
        self.channel = channel
        self.queue = queue
    }

    deinit { channel.close(promise: nil) }

    static func connect(host: String, port: Int, timeout: Double, watch: StreamWatch) async throws -> ChannelTransport {
        let queue = InboundQueue(watch: watch)
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.milliseconds(Int64(timeout * 1000)))
            .channelOption(ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 262_144))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(InboundHandler(queue: queue))
                }
            }
        let channel = try await bootstrap.connect(host: host, port: port).get()
        return ChannelTransport(channel: channel, queue: queue)
    }

    /// Puts TLS under the protocol, once the server has accepted the SSLRequest.
    func startTLS(context: NIOSSLContext, serverHostname: String?) async throws {
        try await channel.eventLoop.submit { [channel] in
            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverHostname), position: .first)
        }.get()
    }

    func send(_ bytes: ByteBuffer) { channel.writeAndFlush(bytes, promise: nil) }

    /// A message split across chunks is gathered in one buffer sized for it (a large message
    /// is copied once, not once per chunk); otherwise the next chunk becomes the buffer.
    func receive(into buffer: inout ByteBuffer, need: Int) async throws {
        var chunk: ByteBuffer
        if let next = taken.withLock({ $0.popLast() }) {
            chunk = next
        } else {
            var chunks = try await queue.take()
            chunks.reverse()
            chunk = chunks.removeLast()
            taken.withLock { $0 = chunks }
        }
        if buffer.readableBytes == 0 {
            buffer = chunk
            return
        }
        if buffer.writableBytes < chunk.readableBytes || buffer.capacity < need {
            var merged = channel.allocator.buffer(capacity: max(need, buffer.readableBytes + chunk.readableBytes))
            merged.writeBuffer(&buffer)
            buffer = merged
        }
        buffer.writeBuffer(&chunk)
    }

    func fail(_ error: any Error) {
        queue.finish(error)
        channel.close(promise: nil)
    }
}

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

/// The channel handler that feeds an `InboundQueue` and holds back reads while it is full.
///
/// The walsender sends (and flushes) every message on its own. Reading the socket whenever it
/// is readable costs a system call per 100-byte message, so after a read that brought little
/// the next one waits `readDelay`; that delay stays short because a Unix socket holds only a
/// few hundred small messages before the walsender has to wait. A waiting reader is woken at
/// most every `wakeDelay` unless `InboundQueue.wakeBytes` have arrived.
final class InboundHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let queue: InboundQueue
    private var context: ChannelHandlerContext?
    private var readHeld = false
    private var wakeScheduled = false
    private var bytesSinceRead = 0
    private var readScheduled = false
    static let wakeDelay = TimeAmount.microseconds(500)
    static let readDelay = TimeAmount.microseconds(250)
    static let smallRead = 16 << 10

    init(queue: InboundQueue) { self.queue = queue }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        queue.state.withLock { $0.resumeReading = { loop.execute { bound.value.resumeReading() } } }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let chunk = unwrapInboundIn(data)
        bytesSinceRead += chunk.readableBytes
        guard queue.push(chunk), !wakeScheduled else { return }
        wakeScheduled = true
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.wakeDelay) { [self] in
            wakeScheduled = false
            queue.wake()
        }
    }

    func read(context: ChannelHandlerContext) {
        guard queue.mayRead() else {
            readHeld = true
            return
        }
        let small = bytesSinceRead < Self.smallRead
        bytesSinceRead = 0
        guard small else { return context.read() }
        guard !readScheduled else { return }
        readScheduled = true
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.readDelay) { [self] in
            readScheduled = false
            guard let context = self.context else { return }
            if queue.mayRead() {
                context.read()
            } else {
                readHeld = true
            }
        }
    }

    func resumeReading() {
        guard readHeld, let context else { return }
        readHeld = false
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        queue.finish(ReplicationConnection.Failure.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        queue.finish(error)
        context.close(promise: nil)
    }
}
