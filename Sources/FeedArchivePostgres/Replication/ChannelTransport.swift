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
            .channelOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 262_144)
            )
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
            try channel.pipeline.syncOperations.addHandler(
                NIOSSLClientHandler(context: context, serverHostname: serverHostname), position: .first)
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
