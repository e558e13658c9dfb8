import FeedArchive
import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresNIO

/// PostgreSQL logical decoding through a replication slot with the `pgoutput` plugin, read
/// with plain SQL (`pg_logical_slot_peek_binary_changes`), never the consuming `get_changes`:
/// the slot only moves when `acknowledge` advances it, after the checkpoint is durable.
///
/// One partition, `"0"`. A cursor is the end LSN of the last archived transaction's commit
/// (what the slot is advanced to); a position is the commit LSN and the change's index in
/// its transaction. Reading happens in LSN windows: each peek decodes whole transactions that
/// commit before the window's end, and its rows are streamed, so memory stays bounded for a
/// transaction of any size (pages then end inside it and carry a `resume` cursor).
///
/// Used from one task at a time (the core's contract); `@unchecked Sendable` so the CLI can
/// hand it to a task.
public final class PostgresSource: FeedSource, @unchecked Sendable {
    public let kind = "postgres"
    public static let partition = "0"
    /// Pages hold at most this many changes, whatever `batch.page_size` asks: the archiver
    /// handles a page (~0.5 µs a change) while nothing reads the replication socket, and the
    /// walsender's send buffer fills in under a millisecond; a 2,000-change page stalled it
    /// about once a page (README, "Performance > PostgreSQL"). Peeks page alike, so that both
    /// read modes give the same pages.
    static let pageLimit = 256
    /// Compression on the reading thread unless the job sets `archive.workers`: the walsender
    /// is the bottleneck and, with the server on this machine, needs a core to itself; a zstd
    /// worker as a third busy thread preempts it or the reader (on 2 cores, the 200,000-row
    /// transaction took ~10% longer with one worker). The same on any machine, so that a job's
    /// blobs do not change bytes when it moves.
    public var defaultCompressionWorkers: Int { 0 }
    public let settings: PostgresSourceSettings
    let logger: Logger

    /// Queries and acknowledgements.
    private var control: PostgresConnection?
    /// The read in progress: a peek, or a replication stream.
    var stream: ReadStream?
    /// The last page's buffer, kept to build the next page in: once the records of that page
    /// are gone (the batcher has copied them), its memory is reused rather than mapped afresh.
    private var spareBuffer: [UInt8] = []
    /// The replication stream `prefetch` is opening, then the stream it opened, until the first
    /// read adopts it (or `close` ends it).
    var early: EarlyStream?
    enum EarlyStream {
        case opening(Task<ReplicationConnection, any Error>)
        case open(ReplicationConnection)
    }
    /// The snapshot being read by a backfill.
    private var snapshot: SnapshotReader?
    /// Whether this source is acknowledged at all (a live run is, from its start; verify and
    /// backfill are not): only then is a stream held open at the head for the acknowledgement.
    private var acknowledging = false
    private var cachedIdentity: SourceIdentity?
    private var connectionCount = 0

    public init(settings: PostgresSourceSettings) {
        self.settings = settings
        var logger = Logger(label: "feedarchive.postgres")
        logger.logLevel = .critical  // postgres-nio logs every query at debug; errors reach us as throws
        self.logger = logger
    }

    deinit {
        // A source dropped without `close()` still closes its connections (postgres-nio
        // requires it); the task keeps them alive until they are closed.
        let open = [control, stream?.connection, snapshot?.connection].compactMap { $0 }
        stream?.replication?.abort()
        if !open.isEmpty {
            Task { for connection in open { try? await connection.close() } }
        }
    }

    public static func make(job: JobConfig) throws -> PostgresSource {
        PostgresSource(settings: try PostgresSourceSettings.parse(job.sourceSettings))
    }

    // MARK: Connections

    func connect() async throws -> PostgresConnection {
        let configuration: PostgresConnection.Configuration
        if let socket = settings.socketPath {
            configuration = .init(unixSocketPath: socket, username: settings.user, password: settings.password, database: settings.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch settings.sslMode {
            case "disable":
                tls = .disable
            case "verify-full":
                tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            default:
                var client = TLSConfiguration.makeClientConfiguration()
                client.certificateVerification = .none  // libpq's prefer/require: encrypted, not verified
                let context = try NIOSSLContext(configuration: client)
                tls = settings.sslMode == "require" ? .require(context) : .prefer(context)
            }
            configuration = .init(host: settings.host, port: settings.port, username: settings.user, password: settings.password, database: settings.database, tls: tls)
        }
        connectionCount += 1
        let connection: PostgresConnection
        let (id, logger) = (connectionCount, logger)
        do {
            connection = try await withDeadline(settings.queryTimeout, "connect to \(settings.endpoint)") {
                try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
            }
        } catch {
            throw classify(error, doing: "connect to \(settings.endpoint)")
        }
        do {
            // Values are decoded as text: fix the session settings their text depends on.
            _ = try await run(on: connection, 
                "SELECT set_config('TimeZone', 'UTC', false), set_config('DateStyle', 'ISO, YMD', false), set_config('bytea_output', 'hex', false), set_config('extra_float_digits', '1', false), set_config('application_name', 'feedarchive', false), set_config('standard_conforming_strings', 'on', false), set_config('statement_timeout', '0', false)",
                doing: "set up the session")
        } catch {
            try? await connection.close()
            throw classify(error, doing: "set up the session on \(settings.endpoint)")
        }
        return connection
    }

    func controlConnection() async throws -> PostgresConnection {
        if let control, !control.isClosed { return control }
        control = try await connect()
        return control!
    }

    /// Runs a query and collects its rows, within `source.query_timeout`; on a timeout the
    /// connection is closed (whatever hangs on it fails) and the error is transient.
    func run(on connection: PostgresConnection, _ query: PostgresQuery, doing what: String) async throws -> [PostgresRow] {
        let logger = logger
        do {
            return try await withDeadline(settings.queryTimeout, what) { try await connection.query(query, logger: logger).collect() }
        } catch let error as FeedArchiveError {
            if case .sourceUnavailable = error { try? await connection.close() }
            throw error
        }
    }

    /// Runs a query on the control connection and collects its rows; a lost connection is
    /// dropped so the next call reconnects.
    func rows(_ query: PostgresQuery, doing what: String) async throws -> [PostgresRow] {
        let connection = try await controlConnection()
        do {
            return try await run(on: connection, query, doing: what)
        } catch {
            let classified = classify(error, doing: what)
            if case .sourceUnavailable = classified {
                try? await connection.close()
                control = nil
            }
            throw classified
        }
    }

    /// Connection trouble is transient (retried); what the server refuses is not.
    func classify(_ error: any Error, doing what: String) -> FeedArchiveError {
        if let error = error as? FeedArchiveError { return error }
        if let error = error as? ReplicationConnection.ServerError {
            return classify(state: error.sqlState, message: error.message, detail: error.detail, hint: error.hint, doing: what)
        }
        if let error = error as? PSQLError {
            if let info = error.serverInfo {
                return classify(state: info[.sqlState] ?? "", message: info[.message] ?? "server error", detail: info[.detail], hint: info[.hint], doing: what)
            }
            let underlying = error.underlying.map { ": \($0)" } ?? ""
            return .sourceUnavailable("\(what): \(error.code)\(underlying)")
        }
        return .sourceUnavailable("\(what): \(error)")
    }

    /// A server error by its SQLSTATE: connection trouble and contention are transient.
    func classify(state: String, message: String, detail: String?, hint: String?, doing what: String) -> FeedArchiveError {
        var message = message
        if let detail { message += " (\(detail))" }
        if let hint { message += "; hint: \(hint)" }
        switch state {
        case "55006":  // object in use: the slot is read by another process
            return .temporary("\(what): \(message) [\(state)]: another process is reading slot \(settings.slot)")
        case "55P03":  // lock not available (the snapshot's lock_timeout)
            return .temporary("\(what): \(message) [\(state)]")
        case _ where ["08", "40", "53", "57", "58"].contains(String(state.prefix(2))):
            // connection, transaction rollback (serialization, deadlock), resources,
            // operator intervention (shutdown, cancel, timeout), system errors: transient
            return .sourceUnavailable("\(what): \(message) [\(state)]")
        case "28P01", "28000":
            return .sourceUnavailable("\(what): \(message) [\(state)] (check source.user and source.password)")
        default:
            return .data(path: nil, message: "\(what): \(message) [\(state)]")
        }
    }

    public func close() async {
        await closeStream()
        await closeEarlyStream()
        if let snapshot { try? await snapshot.connection.close() }
        snapshot = nil
        if let control { try? await control.close() }
        control = nil
    }

    // MARK: Identity, setup, continuity

    public func identity() async throws -> SourceIdentity {
        if let cachedIdentity { return cachedIdentity }
        let row = try await rows("SELECT system_identifier::text, current_database()::text FROM pg_control_system()", doing: "read the system identifier").first
        guard let (system, database) = try row?.decode((String, String).self) else {
            throw FeedArchiveError.sourceUnavailable("pg_control_system() returned nothing")
        }
        let identity = SourceIdentity(facts: ["system_identifier": system, "database": database, "slot": settings.slot])
        cachedIdentity = identity
        return identity
    }

    struct SlotState {
        var plugin: String
        var database: String
        var confirmed: LSN
        var restart: LSN?
        var walStatus: String?
        var activePID: Int?
        var retainedBytes: Int64?
    }

    func slotState() async throws -> SlotState? {
        let rows = try await rows(
            """
            SELECT plugin::text, database::text, confirmed_flush_lsn::text, restart_lsn::text, wal_status, active_pid,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8
            FROM pg_replication_slots WHERE slot_name = \(settings.slot)
            """, doing: "read slot \(settings.slot)")
        guard let row = rows.first else { return nil }
        let (plugin, database, confirmed, restart, status, pid, retained) = try row.decode((String?, String?, String?, String?, String?, Int?, Int64?).self)
        return SlotState(
            plugin: plugin ?? "", database: database ?? "", confirmed: confirmed.flatMap { LSN($0) } ?? LSN(0),
            restart: restart.flatMap { LSN($0) }, walStatus: status, activePID: pid, retainedBytes: retained)
    }

    /// The slot, or a refusal that says how to get one.
    func requireSlot() async throws -> SlotState {
        if settings.create { try await setup() }
        guard let slot = try await slotState() else {
            throw FeedArchiveError.data(
                path: nil,
                message: "replication slot '\(settings.slot)' does not exist on \(settings.endpoint): changes since the checkpoint cannot be proven complete",
                hint: "if it was dropped, create it with `feedarchive setup JOB`, then start a new lineage with `feedarchive epoch JOB --from now --reason \"slot re-created\"` and backfill what is missing with `feedarchive backfill JOB --from beginning`")
        }
        guard slot.plugin == "pgoutput" else {
            throw FeedArchiveError.data(path: nil, message: "replication slot '\(settings.slot)' uses the plugin '\(slot.plugin)'; feedarchive reads pgoutput slots")
        }
        if slot.walStatus == "lost" {
            throw FeedArchiveError.data(
                path: nil,
                message: "replication slot '\(settings.slot)' has wal_status = lost: the server removed WAL it still needed (max_slot_wal_keep_size), so changes were lost",
                hint: "drop and re-create the slot (`SELECT pg_drop_replication_slot('\(settings.slot)')`, then `feedarchive setup JOB`), start a new lineage with `feedarchive epoch JOB --from now --reason \"slot lost\"`, and backfill with `feedarchive backfill JOB --from beginning`")
        }
        return slot
    }

    /// Creates the publication (for `tables`) and the slot when they are missing; adds
    /// listed tables the publication lacks. Safe to run again.
    public func setup() async throws {
        let level = try await rows("SELECT current_setting('wal_level')", doing: "read wal_level").first?.decode(String.self)
        guard level == "logical" else {
            throw FeedArchiveError.sourceUnavailable("\(settings.endpoint) has wal_level = \(level ?? "?"); logical decoding needs wal_level = logical (set it in postgresql.conf and restart the server)")
        }
        let existing = try await rows("SELECT count(*)::int FROM pg_publication WHERE pubname = \(settings.publication)", doing: "look up the publication").first?.decode(Int.self) ?? 0
        if existing == 0 {
            guard !settings.tables.isEmpty else {
                throw FeedArchiveError.data(path: nil, message: "publication '\(settings.publication)' does not exist and the job lists no source.tables to create it for")
            }
            _ = try await rows(PostgresQuery(unsafeSQL: "CREATE PUBLICATION \(settings.publication) FOR TABLE \(settings.tables.joined(separator: ", "))"), doing: "create publication \(settings.publication)")
        } else if !settings.tables.isEmpty {
            let published = try await rows(
                "SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = \(settings.publication)", doing: "list the publication's tables"
            ).map { try $0.decode(String.self) }
            for table in settings.tables {
                let qualified = table.contains(".") ? table : "public." + table
                if !published.contains(qualified) {
                    _ = try await rows(PostgresQuery(unsafeSQL: "ALTER PUBLICATION \(settings.publication) ADD TABLE \(table)"), doing: "add \(table) to publication \(settings.publication)")
                }
            }
        }
        if try await slotState() == nil {
            do {
                _ = try await rows("SELECT lsn::text FROM pg_create_logical_replication_slot(\(settings.slot)::name, 'pgoutput')", doing: "create slot \(settings.slot)")
            } catch let error as FeedArchiveError {
                if try await slotState() == nil { throw error }  // created meanwhile by another run: fine
            }
        }
    }

    public func warnings() async throws -> [String] {
        guard let slot = try await slotState(), let retained = slot.retainedBytes, retained > settings.walWarning else { return [] }
        return ["slot \(settings.slot) retains \(retained >> 20) MiB of WAL (more than source.wal_warning): run the job more often, or check that it succeeds"]
    }

    func token(_ cursor: LSN) async throws -> ContinuationToken { try await token(cursor.description) }

    private func token(_ cursor: String) async throws -> ContinuationToken {
        ContinuationToken(kind: kind, source: try await identity().shortFingerprint, cursors: [Self.partition: cursor])
    }

    /// History before the slot is read as a snapshot of the published tables (see `SnapshotReader`).
    public func snapshotRange() async throws -> (from: ContinuationToken, until: ContinuationToken)? {
        (try await token(SnapshotReader.start), try await token(SnapshotReader.end))
    }

    func cursorLSN(_ token: ContinuationToken) throws -> LSN {
        guard let text = token.cursors[Self.partition], let lsn = LSN(text) else {
            throw FeedArchiveError.data(path: nil, message: "the token has no PostgreSQL LSN for partition 0")
        }
        return lsn
    }

    public func resolve(_ start: StartSpec) async throws -> ContinuationToken {
        switch start {
        case .beginning:
            // A slot holds changes from the point it confirmed; older history needs a snapshot backfill.
            return try await token(try await requireSlot().confirmed)
        case .now:
            _ = try await requireSlot()
            let now = try await rows("SELECT pg_current_wal_lsn()::text", doing: "read the current WAL position").first?.decode(String.self)
            return try await token(now.flatMap { LSN($0) } ?? LSN(0))
        case .time:
            throw FeedArchiveError.usage("a PostgreSQL slot cannot start at a time: use beginning, now, lsn=X/Y or a token")
        case .token(let text):
            if text.hasPrefix("lsn=") {
                guard let lsn = LSN(text.dropFirst(4)) else { throw FeedArchiveError.usage("'\(text)': lsn= needs an LSN such as 0/15293F8") }
                return try await token(lsn)
            }
            let parsed = try ContinuationToken.decode(text)
            guard parsed.kind == kind, let cursor = parsed.cursors[Self.partition], LSN(cursor) != nil else {
                throw FeedArchiveError.data(path: nil, message: "'\(text.prefix(60))' is not a postgres token")
            }
            try parsed.requireSource(try await identity().shortFingerprint, other: "another server, database or slot")
            return parsed
        }
    }

    public func checkContinuity(from token: ContinuationToken) async throws {
        let cursor = try cursorLSN(token)
        let slot = try await requireSlot()
        if slot.confirmed > cursor {
            throw FeedArchiveError.data(
                path: nil,
                message: "replication slot '\(settings.slot)' confirmed \(slot.confirmed), past the checkpoint at \(cursor): something else consumed or advanced the slot, so changes in between may be missing",
                hint: "find out what advanced the slot; to continue from the slot, run `feedarchive epoch JOB --from beginning --reason \"slot advanced elsewhere\"` and backfill with `feedarchive backfill JOB --from beginning`")
        }
    }

    public func checkRetained(from token: ContinuationToken) async throws {
        if let text = token.cursors[Self.partition], SnapshotReader.isSnapshot(text) { return }  // a snapshot is always there
        let cursor = try cursorLSN(token)
        let slot = try await requireSlot()
        if cursor < slot.confirmed {
            throw FeedArchiveError.data(
                path: nil,
                message: "slot '\(settings.slot)' no longer holds changes before \(slot.confirmed) (the range starts at \(cursor)): a slot keeps only what it has not confirmed",
                hint: "`feedarchive backfill JOB --from beginning` takes a snapshot of the published tables instead")
        }
    }

    public func head(for token: ContinuationToken) async throws -> [String: String] {
        let now = try await rows("SELECT pg_current_wal_lsn()::text", doing: "read the current WAL position").first?.decode(String.self)
        let head = max(now.flatMap { LSN($0) } ?? LSN(0), try cursorLSN(token))
        return [Self.partition: head.description]
    }

    /// DESIGN.md "Source notes": when only tables outside the publication change, the slot
    /// would never move and would hold their WAL. Caught up at `cursor` with more than
    /// `heartbeat_after` of WAL since: write a logical message in a transaction of its own (its
    /// commit flushes the WAL before it), peek up to the message's LSN, and if no published
    /// transaction commits in between, that LSN is a cursor with nothing before it to archive.
    public func heartbeat(partition: String, after cursor: String) async throws -> String? {
        guard settings.heartbeatAfter > 0, let from = LSN(cursor) else { return nil }
        await closeStream()  // the peek below needs the slot, which an open stream holds
        let held = try await rows("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), \(from.description)::pg_lsn)::int8", doing: "measure the WAL since the checkpoint").first?.decode(Int64?.self) ?? 0
        guard held >= settings.heartbeatAfter else { return nil }
        let emitted = try await rows("SELECT pg_logical_emit_message(true, 'feedarchive', 'heartbeat')::text", doing: "write a heartbeat").first?.decode(String.self)
        guard let mark = emitted.flatMap({ LSN($0) }), mark > from else { return nil }
        let begins = try await rows(
            PostgresQuery(
                unsafeSQL: """
                    SELECT data FROM pg_logical_slot_peek_binary_changes('\(settings.slot)'::name, '\(mark)'::pg_lsn, NULL,
                        'proto_version', '1', 'publication_names', '\(settings.publication)') WHERE get_byte(data, 0) = 66
                    """), doing: "check for changes before the heartbeat")
        for row in begins {
            var buffer = try row.decode(ByteBuffer.self)
            guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: "B"), let final = buffer.readInteger(as: UInt64.self) else { return nil }
            if LSN(final) >= from { return nil }  // a change to archive: the next run reads it
        }
        return mark.description
    }

    /// Changes cannot be counted without decoding them; `status` shows the slot's lag in bytes.
    public func lag(from token: ContinuationToken) async throws -> Int64? { nil }

    public func statusFacts() async throws -> [(String, String)] {
        guard let slot = try await slotState() else { return [("slot", "\(settings.slot) MISSING")] }
        let lag = try await rows(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = \(settings.slot)",
            doing: "read the slot lag"
        ).first?.decode(Int64?.self)
        var facts: [(String, String)] = [
            ("slot", "\(settings.slot) confirmed \(slot.confirmed), wal_status \(slot.walStatus ?? "?")\(slot.activePID.map { ", active pid \($0)" } ?? "")"),
            ("slot lag", "\(lag ?? 0) bytes of WAL not yet acknowledged"),
        ]
        if let retained = slot.retainedBytes {
            facts.append(("wal held", "\(retained) bytes" + (retained > settings.walWarning ? " — WARNING: above source.wal_warning (\(settings.walWarning))" : "")))
        }
        return facts
    }

    public func metrics() async throws -> [String: Double] {
        guard let slot = try await slotState() else { return ["slot_missing": 1] }
        let lag = try await rows(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = \(settings.slot)",
            doing: "read the slot lag"
        ).first?.decode(Int64?.self)
        return ["slot_lag_bytes": Double(lag ?? 0), "slot_retained_wal_bytes": Double(slot.retainedBytes ?? 0), "slot_missing": 0]
    }

    /// Advances the slot to the checkpoint (DESIGN.md step 8). A lost connection is not an
    /// error here: the checkpoint is durable, and the next run acknowledges again.
    ///
    /// While a replication stream is open the slot is active and `pg_replication_slot_advance`
    /// would fail: the stream's status updates confirm the LSN instead (and the last one goes
    /// out before the stream ends, see `ReplicationConnection.finish`).
    public func acknowledge(_ token: ContinuationToken) async throws {
        let cursor = try cursorLSN(token)
        acknowledging = true
        if let replication = stream?.replication {
            replication.acknowledge(cursor)
            if stream!.reachedHead, stream!.awaitingAck.map({ cursor >= $0 }) ?? true {
                await closeStream(keepState: true)  // everything read is acknowledged: free the slot
            }
            return
        }
        if let early = await prefetched() {
            early.acknowledge(cursor)  // the prefetched stream holds the slot: confirm through it
            return
        }
        do {
            _ = try await rows(
                """
                SELECT pg_replication_slot_advance(slot_name, \(cursor.description)::pg_lsn)
                FROM pg_replication_slots WHERE slot_name = \(settings.slot) AND confirmed_flush_lsn < \(cursor.description)::pg_lsn
                """, doing: "advance slot \(settings.slot)")
        } catch let error as FeedArchiveError {
            if case .sourceUnavailable = error { return }
            if case .temporary = error { return }
            throw error
        }
    }

    // MARK: Reading

    /// One peek of an LSN window, read through a cursor in small fetches.
    ///
    /// Why a cursor rather than streaming the peek's rows: postgres-nio 1.33 traps
    /// (`RowStreamStateMachine` precondition) when the server dies while a result larger than
    /// one socket read is in flight with back-pressure applied — exactly the server crash a
    /// run must survive. Small fetches keep each result within a read or two, and a server
    /// crash between fetches is an ordinary lost connection, retried.
    struct ReadStream {
        /// The peek's connection (`read_mode: peek`).
        var connection: PostgresConnection?
        /// The replication stream (`read_mode: stream`); open until the source is closed or the
        /// slot is needed by SQL (reading stops at the head, see `reachedHead`).
        var replication: ReplicationConnection?
        var cursorOpen = false
        var buffered: [ByteBuffer] = []
        var next = 0
        var decoder = PGOutputDecoder()
        /// The window being read ends here; the read as a whole stops at `head`.
        var windowEnd: LSN
        var head: LSN
        /// The cursor (or resume cursor) this stream continues from.
        var expect: String
        /// A message read but not yet used (it belongs to the next page).
        var pending: ByteBuffer?
        /// Every transaction that commits before the head was read (stream mode).
        var reachedHead = false
        /// The end of the last transaction returned (stream mode): once the head is reached,
        /// the stream stays open until this is acknowledged (see `addStreamed`).
        var awaitingAck: LSN?
    }

    /// Rows per FETCH: small enough that a result rarely spans socket reads (see ReadStream).
    static let fetchSize = 128

    /// `X/Y@N`: inside the transaction that commits at X/Y, changes 0…N were returned.
    static func resumeCursor(_ commit: LSN, index: Int) -> String { "\(commit)@\(index)" }

    public func readPage(partition: String, after cursor: String, through head: String, maxRecords: Int) async throws -> FeedPage {
        if SnapshotReader.isSnapshot(cursor) { return try await readSnapshot(after: cursor, maxRecords: maxRecords) }
        guard partition == Self.partition, let headLSN = LSN(head) else {
            throw FeedArchiveError.data(path: nil, message: "postgres partition '\(partition)' or head '\(head)' is not valid")
        }
        if stream == nil || stream!.expect != cursor || stream!.head != headLSN {
            try await startStream(after: cursor, head: headLSN)
        }
        do {
            return try await nextPage(maxRecords: max(1, min(maxRecords, Self.pageLimit)))
        } catch {
            stream?.replication?.abort()
            if let connection = stream?.connection { try? await connection.close() }
            stream = nil
            if let error = error as? PGOutputError {
                throw FeedArchiveError.data(path: nil, message: "\(error) (slot \(settings.slot))")
            }
            throw classify(error, doing: "read slot \(settings.slot)")
        }
    }

    private func readSnapshot(after cursor: String, maxRecords: Int) async throws -> FeedPage {
        if cursor == SnapshotReader.end { return FeedPage(records: []) }
        do {
            if snapshot == nil || snapshot!.expect != cursor {
                if let snapshot { try? await snapshot.connection.close() }
                snapshot = nil
                let connection = try await connect()
                let control = try await controlConnection()
                let (settings, logger) = (settings, logger)
                do {
                    snapshot = try await withDeadline(settings.queryTimeout, "take a snapshot of publication \(settings.publication)") {
                        try await SnapshotReader.begin(control: control, connection: connection, settings: settings, logger: logger, cursor: cursor)
                    }
                } catch {
                    try? await connection.close()
                    try? await control.close()
                    self.control = nil
                    throw error
                }
            }
            let (reader, logger, limit) = (snapshot!, logger, max(1, maxRecords))
            let (page, advanced) = try await withDeadline(settings.queryTimeout, "read a snapshot page") {
                var reader = reader
                let page = try await reader.nextPage(maxRecords: limit, logger: logger)
                return (page, reader)
            }
            snapshot = advanced
            return page
        } catch {
            if let snapshot { try? await snapshot.connection.close() }
            snapshot = nil
            throw classify(error, doing: "read a snapshot of publication \(settings.publication)")
        }
    }

    private func startStream(after cursor: String, head: LSN) async throws {
        await closeStream()
        var decoder = PGOutputDecoder()
        if let at = cursor.firstIndex(of: "@") {
            guard let commit = LSN(cursor[..<at]), let index = Int(cursor[cursor.index(after: at)...]) else {
                throw FeedArchiveError.data(path: nil, message: "postgres resume cursor '\(cursor)' is not valid")
            }
            decoder.skipBefore = commit
            decoder.skipThroughIndex = index
            decoder.mustResumeAt = commit
        } else {
            guard let lsn = LSN(cursor) else { throw FeedArchiveError.data(path: nil, message: "postgres cursor '\(cursor)' is not an LSN") }
            decoder.skipBefore = lsn
        }
        if settings.readMode == .stream {
            var reader = ReadStream(decoder: decoder, windowEnd: decoder.skipBefore, head: head, expect: cursor)
            let early = await takePrefetched()
            if decoder.skipBefore < head {
                if let early {
                    reader.replication = early
                } else {
                    reader.replication = try await openReplication(from: decoder.skipBefore)
                }
            } else {
                reader.reachedHead = true
                if let early { await finish(early) }
            }
            stream = reader
            return
        }
        let connection = try await connect()
        stream = ReadStream(connection: connection, decoder: decoder, windowEnd: decoder.skipBefore, head: head, expect: cursor)
    }

    /// Opens the next window's peek; false when the head is reached.
    private func openWindow() async throws -> Bool {
        guard var current = stream, let connection = current.connection, current.windowEnd < current.head else { return false }
        let end = LSN(min(current.head.value, current.windowEnd.value + UInt64(settings.readWindow)))
        // The names are checked identifiers and the LSN is ours: safe to write inline.
        _ = try await run(on: connection, "BEGIN", doing: "start reading slot \(settings.slot)")
        _ = try await run(on: connection,
            PostgresQuery(
                unsafeSQL: """
                    DECLARE feedarchive_peek NO SCROLL CURSOR FOR
                    SELECT data FROM pg_logical_slot_peek_binary_changes('\(settings.slot)'::name, '\(end)'::pg_lsn, NULL,
                        'proto_version', '1', 'publication_names', '\(settings.publication)')
                    """), doing: "peek slot \(settings.slot)")
        current.cursorOpen = true
        current.windowEnd = end
        stream = current
        return true
    }

    /// The next message of the peek (`read_mode: peek`), or nil once the head is reached.
    private func nextPeekedMessage() async throws -> ByteBuffer? {
        while true {
            if stream!.next < stream!.buffered.count {
                defer { stream!.next += 1 }
                return stream!.buffered[stream!.next]
            }
            if !stream!.cursorOpen {
                guard try await openWindow() else { return nil }
            }
            Liveness.current?.beat()  // windows of WAL without a published change return no page
            let rows = try await run(on: stream!.connection!, PostgresQuery(unsafeSQL: "FETCH \(Self.fetchSize) FROM feedarchive_peek"), doing: "read slot \(settings.slot)")
            stream!.buffered = try rows.map { try $0.decode(ByteBuffer.self) }
            stream!.next = 0
            if rows.isEmpty {
                // This window is done; the next one starts where it ended.
                _ = try await run(on: stream!.connection!, "COMMIT", doing: "read slot \(settings.slot)")
                stream!.cursorOpen = false
            }
        }
    }

    /// Adds one pgoutput message to the page; returns the page when it ends here. A change
    /// that would overfill the page ends it inside its transaction and waits (`pending`).
    func add(_ message: UnsafeRawBufferPointer, to page: inout PageBuilder, decoder: inout PGOutputDecoder, maxRecords: Int) throws -> FeedPage? {
        let type = message.first ?? 0
        let isChange = type == UInt8(ascii: "I") || type == UInt8(ascii: "U") || type == UInt8(ascii: "D") || type == UInt8(ascii: "T")
        if isChange, page.count >= maxRecords, let transaction = decoder.transaction, !transaction.skip {
            // A transaction larger than a page: end the page inside it.
            stream!.pending = ByteBuffer(bytes: message)
            let resume = Self.resumeCursor(transaction.commitLSN, index: transaction.index - 1)
            stream!.expect = resume
            return page.page(resume: resume)
        }
        if case .commit(let end, let hadRecords) = try decoder.decode(message, into: &page), hadRecords, page.count > 0 {
            let cursor = end.description
            page.endTransaction(cursor: cursor)
            if page.count >= maxRecords {
                stream!.expect = cursor
                stream!.awaitingAck = end
                return page.page(resume: nil)
            }
        }
        return nil
    }

    private func nextPage(maxRecords: Int) async throws -> FeedPage {
        var page = PageBuilder(reusing: &spareBuffer, capacity: maxRecords * 256, keepAtMost: max(maxRecords * 1024, 4 << 20))
        defer { spareBuffer = page.bytes }
        // The decoder is a local while the page is built: a stored property of this class
        // would be checked for exclusive access on every message.
        var decoder = stream!.decoder
        stream!.decoder = PGOutputDecoder()
        defer { stream?.decoder = decoder }
        if let pending = stream!.pending {  // the change that did not fit the last page
            stream!.pending = nil
            if let ended = try pending.withUnsafeReadableBytes({ try add($0, to: &page, decoder: &decoder, maxRecords: maxRecords) }) { return ended }
        }
        if settings.readMode == .stream {
            if let ended = try await addStreamed(to: &page, decoder: &decoder, maxRecords: maxRecords) { return ended }
        } else {
            while let message = try await nextPeekedMessage() {
                if let ended = try message.withUnsafeReadableBytes({ try add($0, to: &page, decoder: &decoder, maxRecords: maxRecords) }) { return ended }
            }
        }
        // Caught up with the head.
        if let last = page.pending.last {
            guard last.cursor != nil else {
                throw PGOutputError(message: "the peek ended inside a transaction (at \(last.position))")
            }
            stream!.expect = last.cursor!
            stream!.awaitingAck = LSN(last.cursor!)
        }
        if let replication = stream?.replication, stream!.reachedHead,
            !acknowledging || stream!.awaitingAck.map({ $0 <= replication.acknowledged }) ?? true
        {
            await closeStream(keepState: true)  // nothing read is waiting for an acknowledgement
        }
        return page.page(resume: nil)
    }
}
