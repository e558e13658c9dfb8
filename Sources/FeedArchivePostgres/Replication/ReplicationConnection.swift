import FeedArchive
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// A minimal client of PostgreSQL's frontend/backend protocol v3 for one
/// `replication=database` connection that streams a logical slot (`START_REPLICATION … LOGICAL`).
///
/// postgres-nio has no replication protocol. Over a Unix socket the reader reads the socket
/// itself (`SocketTransport`); over TCP a SwiftNIO channel does (`ChannelTransport`), which
/// can negotiate TLS. Used by one task at a time (a prefetch hands it over once, see
/// `PostgresSource.prefetch`); the transport and the `StreamWatch` are shared with the watchdog.
final class ReplicationConnection: @unchecked Sendable {
    let transport: any ReplicationTransport
    let watch: StreamWatch
    /// Received and not read yet.
    private var buffer = ByteBuffer()
    private var sinceDrain = 0

    private init(transport: any ReplicationTransport, watch: StreamWatch) {
        self.transport = transport
        self.watch = watch
    }

    deinit {
        watch.state.withLock { $0.stopped = true }
        transport.fail(Failure.closed)
    }

    // MARK: Connecting

    /// Connects, negotiates TLS as `sslmode` asks, and authenticates as `user` for a logical
    /// replication connection to `database`.
    static func connect(settings: PostgresSourceSettings) async throws -> ReplicationConnection {
        let watch = StreamWatch(waitLimit: settings.queryTimeout)
        let transport: any ReplicationTransport
        if let socket = settings.socketPath {
            transport = try SocketTransport.connect(path: socket, timeout: settings.queryTimeout, watch: watch)
        } else {
            transport = try await ChannelTransport.connect(
                host: settings.host, port: settings.port, timeout: settings.queryTimeout, watch: watch)
        }
        let connection = ReplicationConnection(transport: transport, watch: watch)
        connection.startWatchdog()
        do {
            if settings.socketPath == nil && settings.sslMode != "disable" {
                try await connection.negotiateTLS(settings)
            }
            try await connection.startUp(settings)
        } catch {
            connection.abort()
            throw error
        }
        return connection
    }

    /// Every 100 ms: fails a reader that has waited longer than the queue's limit (and closes
    /// the channel); asks an idle server where it is (a keepalive tells the reader whether the
    /// head is reached when nothing is published); and sends a status update at least every
    /// 10 s, as pg_recvlogical does, so wal_sender_timeout never ends a stream whose reader is
    /// busy writing a batch.
    ///
    /// A thread of its own, not a task: over a Unix socket the reader blocks its thread in
    /// `poll` while it waits, and the shared task pool has one thread per core, so a watchdog
    /// task could wait behind it (on one core, until the run's stall watchdog ends it).
    private func startWatchdog() {
        let transport = self.transport
        let watch = self.watch
        let thread = Thread { ReplicationConnection.watch(watch, transport: transport) }
        thread.name = "feedarchive-pg-watchdog"
        thread.start()
    }

    private static func watch(_ watch: StreamWatch, transport: any ReplicationTransport) {
        while true {
            usleep(100_000)
            guard !watch.state.withLock({ $0.stopped }) else { return }
            let now = StreamWatch.uptime()
            let state = watch.state.withLock { $0 }
            let waited = state.waitingSince.map { Double(now &- $0) / 1e9 }
            if let waited, waited > state.waitLimit {
                transport.fail(Failure.timedOut(state.waitLimit))
                return
            }
            guard state.streaming else { continue }
            let sinceStatus = Double(now &- state.lastStatus) / 1e9
            if let waited, waited > 0.2, sinceStatus > 0.2 {
                sendStatus(transport, watch: watch, acknowledged: state.acknowledged, replyRequested: true)
            } else if sinceStatus > 10 {
                sendStatus(transport, watch: watch, acknowledged: state.acknowledged, replyRequested: false)
            }
        }
    }

    // MARK: Streaming

    /// `START_REPLICATION SLOT slot LOGICAL lsn (pgoutput options)`; returns once the server
    /// answered with CopyBothResponse.
    func startReplication(slot: String, publication: String, from lsn: LSN) async throws {
        // The names are checked identifiers (PostgresSourceSettings.isName): safe inline.
        let command =
            "START_REPLICATION SLOT \(slot) LOGICAL \(lsn) (\"proto_version\" '1', \"publication_names\" '\(publication)')"
        send(type: "Q") { $0.writeNullTerminatedString(command) }
        while true {
            let (type, body) = try await nextMessage()
            switch type {
            case UInt8(ascii: "W"):
                watch.state.withLock { $0.streaming = true }
                return
            case UInt8(ascii: "E"): throw Self.serverError(body)
            default: continue
            }
        }
    }

    /// Reports `lsn` as written, flushed and applied: the walsender confirms it for the slot
    /// (its confirmed_flush_lsn), as `pg_replication_slot_advance` would.
    func acknowledge(_ lsn: LSN) {
        let position = watch.state.withLock { state in
            state.acknowledged = max(state.acknowledged, lsn.value)
            return state.acknowledged
        }
        Self.sendStatus(transport, watch: watch, acknowledged: position, replyRequested: false)
    }

    /// Answers a keepalive that asks for a reply.
    func sendStatus() {
        Self.sendStatus(
            transport, watch: watch, acknowledged: watch.state.withLock { $0.acknowledged }, replyRequested: false)
    }

    /// A Standby Status Update ('r') reporting `acknowledged` as written, flushed and applied;
    /// with `replyRequested`, the server answers at once with a keepalive that carries how far
    /// it has read the WAL. Until something is acknowledged the positions are 0 (invalid), which
    /// the server ignores. (Writes from any thread go through the transport in order.)
    static func sendStatus(
        _ transport: any ReplicationTransport, watch: StreamWatch, acknowledged: UInt64, replyRequested: Bool
    ) {
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000) - PGOutputDecoder.postgresEpoch
        watch.state.withLock { $0.lastStatus = StreamWatch.uptime() }
        var message = ByteBuffer()
        message.reserveCapacity(39)
        message.writeInteger(UInt8(ascii: "d"))
        message.writeInteger(Int32(38))
        message.writeInteger(UInt8(ascii: "r"))
        message.writeInteger(acknowledged)
        message.writeInteger(acknowledged)
        message.writeInteger(acknowledged)
        message.writeInteger(now)
        message.writeInteger(UInt8(replyRequested ? 1 : 0))
        transport.send(message)
    }

    /// Ends streaming cleanly: a last status update, CopyDone, and the server's answer (once it
    /// has it, the walsender has processed the update and released the slot). Gives up after
    /// `limit` seconds and closes the socket; false then: the update may not have been read.
    @discardableResult
    func finish(limit: Double) async -> Bool {
        sendStatus()
        send(type: "c") { _ in }
        watch.state.withLock {
            $0.waitLimit = limit
            $0.streaming = false
        }
        let started = StreamWatch.uptime()
        var clean = false
        while Double(StreamWatch.uptime() &- started) / 1e9 < limit {
            guard let (type, _) = try? await nextMessage() else { break }
            if type == UInt8(ascii: "Z") {
                clean = true
                break
            }
            if type == UInt8(ascii: "E") { break }
        }
        send(type: "X") { _ in }
        abort()
        return clean
    }

    /// What status updates have reported as flushed.
    var acknowledged: LSN { LSN(watch.state.withLock { $0.acknowledged }) }

    /// Closes the socket at once.
    func abort() {
        watch.state.withLock { $0.stopped = true }
        transport.fail(Failure.closed)
    }

    // MARK: Messages

    func send(type: Character, _ body: (inout ByteBuffer) throws -> Void) rethrows {
        var message = ByteBuffer()
        message.reserveCapacity(64)
        message.writeInteger(type.asciiValue!)
        message.writeInteger(Int32(0))
        try body(&message)
        message.setInteger(Int32(message.readableBytes - 1), at: 1)
        transport.send(message)
    }

    /// One byte outside the message framing (the answer to SSLRequest).
    func nextByte() async throws -> UInt8? {
        while buffer.readableBytes == 0 { try await transport.receive(into: &buffer, need: 1) }
        return buffer.readInteger(as: UInt8.self)
    }

    /// The next backend message: its type and a copy of its body (start-up, the end of a stream;
    /// streaming itself reads with `readMessages`, which frames messages the same way).
    func nextMessage() async throws -> (type: UInt8, body: ByteBuffer) {
        var message: (type: UInt8, body: ByteBuffer)?
        try await readMessages { type, body in
            message = (type, ByteBuffer(bytes: body))
            return false
        }
        return message!
    }

    /// Hands each whole message already received to `body` (its type and body, valid only
    /// during the call), in order, until `body` returns false or the messages received so far
    /// are used up; waits for bytes only when not one message is whole. The streaming reader's
    /// hot path: one call per socket read rather than an async call per message.
    func readMessages(_ body: (UInt8, UnsafeRawBufferPointer) throws -> Bool) async throws {
        while true {
            var need = 0
            var delivered = false
            var more = true
            var used = 0
            defer { buffer.moveReaderIndex(forwardBy: used) }  // what was delivered, even on a throw
            try buffer.withUnsafeReadableBytes { bytes in
                var offset = 0
                defer { used = offset }
                while more {
                    guard bytes.count - offset >= 5 else {
                        need = 5
                        break
                    }
                    let length = Int(Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 1, as: Int32.self)))
                    guard length >= 4 else { throw Failure.protocolViolation("a message length of \(length)") }
                    guard bytes.count - offset > length else {
                        need = length + 1
                        break
                    }
                    let type = bytes[offset]
                    let message = UnsafeRawBufferPointer(rebasing: bytes[(offset + 5)..<(offset + 1 + length)])
                    offset += 1 + length
                    delivered = true
                    more = try body(type, message)
                    sinceDrain += 1
                    if sinceDrain == SocketTransport.drainEvery {
                        sinceDrain = 0
                        transport.drain()
                    }
                }
            }
            if !more || delivered { return }
            try await transport.receive(into: &buffer, need: need)
        }
    }

    static func serverError(_ body: ByteBuffer) -> ServerError {
        var body = body
        var fields: [UInt8: String] = [:]
        while let code = body.readInteger(as: UInt8.self), code != 0, let value = body.readNullTerminatedString() {
            fields[code] = value
        }
        return ServerError(fields: fields)
    }
}
