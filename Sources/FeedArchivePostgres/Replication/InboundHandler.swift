import NIOCore

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
