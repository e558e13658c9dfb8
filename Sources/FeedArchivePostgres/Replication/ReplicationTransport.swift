import NIOCore

/// The byte stream under a `ReplicationConnection`.
///
/// Two kinds: `SocketTransport`, a plain Unix-domain socket that the reader reads on its own
/// thread (as pg_recvlogical does), and `ChannelTransport`, a SwiftNIO channel, for TCP (where
/// TLS may be negotiated). Reading is for the connection's one reader; `send` and `fail` may
/// come from any thread (the watchdog's status updates and time-outs).
protocol ReplicationTransport: AnyObject, Sendable {
    /// Sends `bytes` after everything sent before; errors show on the read side.
    func send(_ bytes: ByteBuffer)
    /// Appends what arrived next to `buffer`'s unread bytes (at least one byte; with `need`,
    /// the whole message being gathered fits without growing again). Waits while nothing has
    /// arrived, marking the wait in `watch` for the watchdog.
    func receive(into buffer: inout ByteBuffer, need: Int) async throws
    /// Ends the connection: the reader gets `error` (after what arrived before, for a channel).
    func fail(_ error: any Error)
    /// From the reader, between messages: takes in what the server has sent meanwhile, without
    /// waiting, so that the server's send buffer does not fill while the reader is busy.
    func drain()
}

extension ReplicationTransport {
    func drain() {}
}
