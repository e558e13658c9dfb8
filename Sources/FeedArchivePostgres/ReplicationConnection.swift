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
    /// What went wrong on the connection itself (server errors are `ServerError`).
    enum Failure: Error, CustomStringConvertible {
        case closed
        case protocolViolation(String)
        case timedOut(Double)
        case unsupported(String)
        case connect(String, Int32)
        case io(String, Int32)

        var description: String {
            switch self {
            case .closed: "the server closed the replication connection"
            case .protocolViolation(let text): "protocol violation: \(text)"
            case .timedOut(let seconds): "no message from the server within \(Int(seconds)) s (source.query_timeout)"
            case .unsupported(let text): text
            case .connect(let path, let code): "cannot connect to \(path): \(String(cString: strerror(code)))"
            case .io(let call, let code): "\(call) on the replication connection failed: \(String(cString: strerror(code)))"
            }
        }
    }

    /// An ErrorResponse, with its fields by code (`C` SQLSTATE, `M` message, `D`, `H`).
    struct ServerError: Error, CustomStringConvertible {
        var fields: [UInt8: String]
        var sqlState: String { fields[UInt8(ascii: "C")] ?? "" }
        var message: String { fields[UInt8(ascii: "M")] ?? "server error" }
        var detail: String? { fields[UInt8(ascii: "D")] }
        var hint: String? { fields[UInt8(ascii: "H")] }
        var description: String { "\(message) [\(sqlState)]" }
    }

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
            transport = try await ChannelTransport.connect(host: settings.host, port: settings.port, timeout: settings.queryTimeout, watch: watch)
        }
        let connection = ReplicationConnection(transport: transport, watch: watch)
        connection.startWatchdog()
        do {
            if settings.socketPath == nil && settings.sslMode != "disable" { try await connection.negotiateTLS(settings) }
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

    private func negotiateTLS(_ settings: PostgresSourceSettings) async throws {
        var request = ByteBuffer()
        request.writeInteger(Int32(8))
        request.writeInteger(Int32(80_877_103))
        transport.send(request)
        guard let answer = try await nextByte() else { throw Failure.closed }
        guard answer == UInt8(ascii: "S") else {
            if settings.sslMode == "prefer" { return }
            throw Failure.unsupported("the server at \(settings.endpoint) does not accept TLS, and source.sslmode is \(settings.sslMode)")
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if settings.sslMode != "verify-full" { configuration.certificateVerification = .none }  // libpq's prefer/require
        let context = try NIOSSLContext(configuration: configuration)
        let hostname = settings.sslMode == "verify-full" ? settings.host : nil
        guard let channel = transport as? ChannelTransport else { throw Failure.unsupported("TLS over a Unix socket") }
        try await channel.startTLS(context: context, serverHostname: hostname)
    }

    private func startUp(_ settings: PostgresSourceSettings) async throws {
        var startup = ByteBuffer()
        startup.writeInteger(Int32(0))
        startup.writeInteger(Int32(196_608))  // protocol 3.0
        for (key, value) in [("user", settings.user), ("database", settings.database), ("replication", "database"), ("application_name", "feedarchive")] {
            startup.writeNullTerminatedString(key)
            startup.writeNullTerminatedString(value)
        }
        startup.writeInteger(UInt8(0))
        startup.setInteger(Int32(startup.readableBytes), at: 0)
        transport.send(startup)
        var scram: PostgresAuthentication.SCRAM?
        func password() throws -> String {
            guard let password = settings.password else {
                throw ServerError(fields: [UInt8(ascii: "C"): "28P01", UInt8(ascii: "M"): "the server asks user \"\(settings.user)\" for a password, and source.password is not set"])
            }
            return password
        }
        while true {
            let message = try await nextMessage()
            var body = message.body
            switch message.type {
            case UInt8(ascii: "R"):
                guard let code = body.readInteger(as: Int32.self) else { throw Failure.protocolViolation("short Authentication message") }
                switch code {
                case 0: continue
                case 3:
                    let text = try password()
                    send(type: "p") { $0.writeNullTerminatedString(text) }
                case 5:
                    guard let salt = body.readBytes(length: 4) else { throw Failure.protocolViolation("md5 request without salt") }
                    let answer = PostgresAuthentication.md5Answer(user: settings.user, password: try password(), salt: salt)
                    send(type: "p") { $0.writeNullTerminatedString(answer) }
                case 10:
                    var mechanisms: [String] = []
                    while let name = body.readNullTerminatedString(), !name.isEmpty { mechanisms.append(name) }
                    guard mechanisms.contains("SCRAM-SHA-256") else {
                        throw Failure.unsupported("the server offers SASL mechanisms \(mechanisms); feedarchive speaks SCRAM-SHA-256")
                    }
                    var exchange = PostgresAuthentication.SCRAM(password: try password())
                    let first = exchange.first()
                    scram = exchange
                    send(type: "p") {
                        $0.writeNullTerminatedString("SCRAM-SHA-256")
                        $0.writeInteger(Int32(first.count))
                        $0.writeBytes(first)
                    }
                case 11:
                    guard var exchange = scram else { throw Failure.protocolViolation("SASLContinue before SASL") }
                    let final = try exchange.final(serverFirst: body.readBytes(length: body.readableBytes) ?? [])
                    scram = exchange
                    send(type: "p") { $0.writeBytes(final) }
                case 12:
                    guard let exchange = scram else { throw Failure.protocolViolation("SASLFinal before SASL") }
                    try exchange.verify(serverFinal: body.readBytes(length: body.readableBytes) ?? [])
                default:
                    throw Failure.unsupported("the server asks for authentication method \(code); feedarchive speaks trust, password, md5 and scram-sha-256")
                }
            case UInt8(ascii: "E"):
                throw Self.serverError(body)
            case UInt8(ascii: "Z"):
                return
            default:
                continue  // ParameterStatus, BackendKeyData, NoticeResponse, NegotiateProtocolVersion
            }
        }
    }

    // MARK: Streaming

    /// `START_REPLICATION SLOT slot LOGICAL lsn (pgoutput options)`; returns once the server
    /// answered with CopyBothResponse.
    func startReplication(slot: String, publication: String, from lsn: LSN) async throws {
        // The names are checked identifiers (PostgresSourceSettings.isName): safe inline.
        let command = "START_REPLICATION SLOT \(slot) LOGICAL \(lsn) (\"proto_version\" '1', \"publication_names\" '\(publication)')"
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
        Self.sendStatus(transport, watch: watch, acknowledged: watch.state.withLock { $0.acknowledged }, replyRequested: false)
    }

    /// A Standby Status Update ('r') reporting `acknowledged` as written, flushed and applied;
    /// with `replyRequested`, the server answers at once with a keepalive that carries how far
    /// it has read the WAL. Until something is acknowledged the positions are 0 (invalid), which
    /// the server ignores. (Writes from any thread go through the transport in order.)
    static func sendStatus(_ transport: any ReplicationTransport, watch: StreamWatch, acknowledged: UInt64, replyRequested: Bool) {
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

    private func send(type: Character, _ body: (inout ByteBuffer) throws -> Void) rethrows {
        var message = ByteBuffer()
        message.reserveCapacity(64)
        message.writeInteger(type.asciiValue!)
        message.writeInteger(Int32(0))
        try body(&message)
        message.setInteger(Int32(message.readableBytes - 1), at: 1)
        transport.send(message)
    }

    /// One byte outside the message framing (the answer to SSLRequest).
    private func nextByte() async throws -> UInt8? {
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
