import CSQLite
import FeedArchive
import Foundation

/// The embedded default source: any SQLite table with an increasing integer sequence column
/// (an outbox). Read-only, in short read transactions (`WHERE seq > ? ORDER BY seq LIMIT n`)
/// so a live writer is never blocked. The token cursor is the last sequence value consumed.
public final class SQLiteSource: FeedSource, @unchecked Sendable {
    // @unchecked: the connection, its statements and caches are touched only under `dbLock`
    // (through `db`), by the caller or the read-ahead thread.
    public let kind = "sqlite"
    public static let partition = Envelope.singlePartition
    /// Envelope bytes after which a page ends (it always holds at least one change).
    static let pageByteLimit = 4 << 20
    let settings: SQLiteSourceSettings
    private let database: SQLiteDatabase
    private let tableSQL: String
    let isRowidSequence: Bool
    /// The sequence is an `INTEGER PRIMARY KEY AUTOINCREMENT`: SQLite never hands a value out
    /// twice, and `sqlite_sequence` remembers the highest one even when every row is deleted.
    var isAutoincrement: Bool { isRowidSequence && tableSQL.uppercased().contains("AUTOINCREMENT") }
    private var pageStatement: Statement?
    var tableLiteral: [UInt8] = []

    public init(settings: SQLiteSourceSettings) throws {
        self.settings = settings
        guard FileManager.default.fileExists(atPath: settings.path) else {
            throw FeedArchiveError.sourceUnavailable("SQLite database \(settings.path) does not exist")
        }
        database = try SQLiteDatabase(readOnly: settings.path)
        let master = try database.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1")
        sqlite3_bind_text(master.handle, 1, settings.table, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self))
        guard try master.step(), let sql = master.string(0) else {
            throw settings.error("table", "table '\(settings.table)' does not exist in \(settings.path)")
        }
        master.reset()
        tableSQL = sql
        // Which columns exist, and whether the sequence is the rowid (or an alias of it).
        let info = try database.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")
        sqlite3_bind_text(info.handle, 1, settings.table, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self))
        var columns: [String] = []
        while try info.step() { columns.append(info.string(0) ?? "") }
        info.reset()
        columnNames = columns
        let lower = Set(columns.map { $0.lowercased() })
        for (key, column) in [
            ("sequence_column", settings.sequenceColumn), ("document_column", settings.documentColumn),
            ("key_column", settings.keyColumn), ("timestamp_column", settings.timestampColumn),
            ("op_column", settings.opColumn), ("partition_column", settings.partitionColumn),
        ] {
            guard let column, !(key == "sequence_column" && column.lowercased() == "rowid") else { continue }
            if !lower.contains(column.lowercased()) {
                throw settings.error(
                    key,
                    "table '\(settings.table)' has no column '\(column)' (columns: \(columns.joined(separator: ", ")))")
            }
        }
        isRowidSequence = try Self.isRowid(settings.sequenceColumn, of: settings, columns: lower, in: database)
        // Pages resume after the last value read: values that repeat would be lost at a page,
        // batch or limit boundary, so the column must be unique.
        if !isRowidSequence {
            let literal = { (text: String) in "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
            let uniqueIndexes =
                try database.scalarInt(
                    """
                    SELECT count(*) FROM pragma_index_list(\(literal(settings.table))) AS l
                    WHERE l."unique" = 1 AND l.partial = 0 AND (SELECT count(*) FROM pragma_index_info(l.name)) = 1
                      AND (SELECT name FROM pragma_index_info(l.name)) = \(literal(settings.sequenceColumn)) COLLATE NOCASE
                    """) ?? 0
            if uniqueIndexes == 0 {
                throw settings.error(
                    "sequence_column",
                    "column '\(settings.sequenceColumn)' of \(settings.table) is not unique (not the rowid, and no PRIMARY KEY or UNIQUE index on it alone): changes that share a value would be lost where a page ends between them. Use the table's INTEGER PRIMARY KEY AUTOINCREMENT, or add a UNIQUE index on the column"
                )
            }
        }
        JSONText.appendString(settings.table, to: &tableLiteral)
    }

    /// Whether `column` is the table's rowid, or an alias of it: SQLite assigns those under its
    /// write lock, in commit order. Asked of SQLite's planner rather than read off the declared
    /// type: `INTEGER PRIMARY KEY DESC` and a WITHOUT ROWID table's key are no aliases, and a
    /// real column may be named `rowid`.
    static func isRowid(
        _ column: String, of settings: SQLiteSourceSettings, columns: Set<String>, in database: SQLiteDatabase
    ) throws -> Bool {
        let quote = { (name: String) in "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        let hasRowid = (try? database.prepare("SELECT rowid FROM \(quote(settings.table)) LIMIT 0")) != nil
        if !hasRowid && !columns.contains(column.lowercased()) {
            throw settings.error(
                "sequence_column",
                "table '\(settings.table)' is a WITHOUT ROWID table: it has no \(column) to read in order. Set source.sequence_column to a unique integer column SQLite or the application assigns in commit order"
            )
        }
        guard hasRowid else { return false }
        let plan = try database.prepare(
            "EXPLAIN QUERY PLAN SELECT 1 FROM \(quote(settings.table)) WHERE \(quote(column)) = 1")
        defer { plan.reset() }
        var detail = ""
        while try plan.step() { detail += plan.string(3) ?? "" }
        return detail.contains("USING INTEGER PRIMARY KEY")
    }

    private(set) var columnNames: [String] = []
    var columnCount: Int { columnNames.count }
    private let dbLock = NSLock()
    /// Pages built ahead on another thread while the caller compresses the previous ones.
    private lazy var readAhead = ReadAhead<PageKey, FeedPage>(
        depth: 3,
        build: { [weak self] key in
            guard let self else { throw CancellationError() }
            return try db { _ in try buildPage(key) }
        },
        following: { key, page in
            let full =
                page.records.count == key.maxRecords
                || page.records.reduce(0, { $0 + $1.line.count }) >= SQLiteSource.pageByteLimit
            guard full, let last = page.records.last?.cursor.flatMap({ Int64($0) }), last < key.through else {
                return nil
            }
            return PageKey(after: last, through: key.through, maxRecords: key.maxRecords)
        })

    struct PageKey: Equatable, Sendable {
        var after: Int64
        var through: Int64
        var maxRecords: Int
    }

    /// Runs `body` with the connection, one thread at a time.
    func db<T>(_ body: (SQLiteDatabase) throws -> T) rethrows -> T {
        dbLock.lock()
        defer { dbLock.unlock() }
        return try body(database)
    }
    var envelope = EnvelopeWriter()
    /// Changes archived with a value in their raw form since the last `drainWarnings`, under `dbLock`.
    var rowWarnings: [String] = []
    var rowWarningsLeftOut = 0

    public static func make(job: JobConfig) throws -> SQLiteSource {
        try SQLiteSource(settings: SQLiteSourceSettings.parse(job.sourceSettings))
    }

    func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
    var seq: String { quoted(settings.sequenceColumn) }
    var table: String { quoted(settings.table) }

    public func identity() async throws -> SourceIdentity {
        let path = URL(fileURLWithPath: settings.path).resolvingSymlinksInPath().path
        var info = stat()
        guard stat(path, &info) == 0 else { throw FeedArchiveError.sourceUnavailable("cannot stat \(path)") }
        return SourceIdentity(facts: [
            "file": path, "table": settings.table, "sequence": settings.sequenceColumn,
            "inode": "\(info.st_dev):\(info.st_ino)",
        ])
    }

    public var archiveShape: [String: String] {
        [
            "source.document_column": settings.documentColumn ?? "", "source.key_column": settings.keyColumn ?? "",
            "source.timestamp_column": settings.timestampColumn ?? "",
            "source.timestamp_unit": String(settings.timestampUnit),
            "source.op_column": settings.opColumn ?? "", "source.partition_column": settings.partitionColumn ?? "",
        ]
    }

    public func warnings() async throws -> [String] {
        if !isRowidSequence {
            return [
                "\(settings.path): table \(settings.table) uses \(settings.sequenceColumn) as its sequence, a column SQLite does not assign: values the application chooses can commit out of order, and a row committed more than about 5,000 rows behind the newest row read is never read. Use the table's INTEGER PRIMARY KEY AUTOINCREMENT."
            ]
        }
        if isRowidSequence && !isAutoincrement {
            return [
                "\(settings.path): table \(settings.table) uses its rowid as the sequence without AUTOINCREMENT: after its newest rows are deleted or a VACUUM, SQLite can hand out rowids again, and the job then stops until a new epoch. Declare the key INTEGER PRIMARY KEY AUTOINCREMENT."
            ]
        }
        return []
    }

    private func token(_ cursor: Int64) async throws -> ContinuationToken {
        ContinuationToken(
            kind: kind, source: try await identity().shortFingerprint, cursors: [Self.partition: String(cursor)])
    }

    public func resolve(_ start: StartSpec) async throws -> ContinuationToken {
        switch start {
        case .beginning:
            let first = try db { try $0.scalarInt("SELECT min(\(seq)) FROM \(table) WHERE \(seq) IS NOT NULL") } ?? 1
            return try await token(min(0, first - 1))
        case .now:
            return try await token(try highestSequence() ?? 0)
        case .time(let date):
            guard settings.timestampColumn != nil else {
                throw FeedArchiveError.usage("a start time needs source.timestamp_column; this job's table has none")
            }
            let target = Int64(date.timeIntervalSince1970 * 1_000_000)
            let cursor: Int64 = try db { database in
                let statement = try database.prepare(
                    "SELECT \(seq), \(quoted(settings.timestampColumn!)) FROM \(table) ORDER BY \(seq)")
                defer { statement.reset() }
                var previous: Int64 = 0
                while try statement.step() {
                    if let ts = timestamp(statement, 1).micros, ts >= target { return statement.int(0) - 1 }
                    previous = statement.int(0)
                }
                return previous
            }
            return try await token(cursor)
        case .token(let text):
            if text.hasPrefix("seq=") {
                guard let value = Int64(text.dropFirst(4)) else {
                    throw FeedArchiveError.usage("'\(text)': seq= needs an integer")
                }
                return try await token(value)
            }
            let parsed = try ContinuationToken.decode(text)
            guard parsed.kind == kind, let cursor = parsed.cursors[Self.partition], Int64(cursor) != nil else {
                throw FeedArchiveError.data(path: nil, message: "\(abbreviated(text)) is not an sqlite token")
            }
            try parsed.requireSource(try await identity().shortFingerprint)
            return parsed
        }
    }

    private func abbreviated(_ text: String) -> String { text.count > 60 ? "'\(text.prefix(60))…'" : "'\(text)'" }

    private func cursorValue(_ token: ContinuationToken) throws -> Int64 {
        guard let text = token.cursors[Self.partition], let value = Int64(text) else {
            throw FeedArchiveError.data(path: nil, message: "the token has no sqlite cursor for partition 0")
        }
        return value
    }

    /// The highest sequence value, after checking that every value is one a page query reads:
    /// a column that is not the rowid can also hold NULL (never `> cursor`) or text (after every
    /// integer), and those changes would never be archived. Both checks use the column's index.
    private func highestSequence() throws -> Int64? {
        try db { database in
            // Negative values sort before every cursor; the rowid can hold them too. Each
            // test is a seek on the sequence's index (the rowid's b-tree for the rowid).
            let strayTest =
                isRowidSequence
                ? "\(seq) < 0" : "\(seq) IS NULL OR \(seq) > 9223372036854775807 OR \(seq) < 0"
            do {
                let stray = try database.prepare("SELECT quote(\(seq)) FROM \(table) WHERE \(strayTest) LIMIT 1")
                defer { stray.reset() }
                if try stray.step() {
                    throw FeedArchiveError.data(
                        path: settings.path,
                        message:
                            "table \(settings.table) has a row whose \(settings.sequenceColumn) is \(stray.string(0) ?? "?"): the sequence must be an integer of 0 or more in every row, or that change is never archived",
                        hint:
                            "let SQLite assign the sequence (INTEGER PRIMARY KEY AUTOINCREMENT), or fix the row; nothing was archived by this run"
                    )
                }
            }
            return try database.scalarInt("SELECT max(\(seq)) FROM \(table)")
        }
    }

    public func checkContinuity(from token: ContinuationToken) async throws {
        let cursor = try cursorValue(token)
        let highest = try highestSequence()
        if let highest, highest >= cursor { return try checkSealedFacts(token, cursor: cursor) }
        if highest == nil && cursor <= 0 { return }
        // The newest rows were deleted (a drained outbox): AUTOINCREMENT still remembers the
        // values it handed out, and hands out none of them again.
        if isAutoincrement,
            let allocated = try db({
                try $0.scalarInt("SELECT seq FROM sqlite_sequence WHERE name = '\(settings.table)' COLLATE NOCASE")
            }), allocated >= cursor
        {
            return try checkSealedFacts(token, cursor: cursor)
        }
        throw FeedArchiveError.data(
            path: settings.path,
            message:
                "the sequence went backwards: the checkpoint is at \(settings.sequenceColumn) \(cursor), but the highest \(settings.sequenceColumn) in \(settings.table) is \(highest.map(String.init) ?? "none (the table is empty)"); this is not the feed the archive continues",
            hint:
                "if the table was rebuilt on purpose, start a new epoch: `feedarchive epoch JOB --from beginning --reason \"table rebuilt\"`"
        )
    }

    public func checkRetained(from token: ContinuationToken) async throws {
        let cursor = try cursorValue(token)
        guard let oldest = try db({ try $0.scalarInt("SELECT min(\(seq)) FROM \(table)") }) else { return }
        // Rows between the cursor and the oldest row left were pruned (or never existed): the
        // source cannot prove the range any more.
        if oldest > cursor + 1 {
            throw FeedArchiveError.data(
                path: settings.path,
                message:
                    "the table no longer holds the range: it starts at \(settings.sequenceColumn) \(oldest), the backfill starts after \(cursor); rows in between were deleted or never existed"
            )
        }
    }

    public func head(for token: ContinuationToken) async throws -> [String: String] {
        let cursor = try cursorValue(token)
        let highest = try highestSequence() ?? cursor
        return [Self.partition: String(max(highest, cursor))]
    }

    public func lag(from token: ContinuationToken) async throws -> Int64? {
        let cursor = try cursorValue(token)
        return try db { try $0.scalarInt("SELECT count(*) FROM \(table) WHERE \(seq) > ?1", [cursor]) }
    }

    /// The columns a change is read from: sequence, document, then the optional columns (what
    /// `encodeEnvelope` expects). Without a document column the document is the row as a JSON
    /// object of its first `wholeRowColumns` columns (all of them by default).
    func changeColumnsSQL(wholeRowColumns: Int? = nil) -> String {
        let document: String
        if let column = settings.documentColumn {
            document = quoted(column)
        } else {
            let pairs = columnNames.prefix(wholeRowColumns ?? columnCount).map { name in
                "'\(name.replacingOccurrences(of: "'", with: "''"))', CASE WHEN typeof(\(quoted(name))) = 'blob' THEN hex(\(quoted(name))) ELSE \(quoted(name)) END"
            }
            document = "json_object(\(pairs.joined(separator: ", ")))"
        }
        let optional = [settings.keyColumn, settings.timestampColumn, settings.opColumn, settings.partitionColumn]
            .map { $0.map(quoted) ?? "NULL" }
        return "\(seq), \(document), \(optional.joined(separator: ", "))"
    }

    /// The page query, prepared once.
    private func pageQuery() throws -> Statement {
        if let pageStatement { return pageStatement }
        let statement = try database.prepare(
            "SELECT \(changeColumnsSQL()) FROM \(table) WHERE \(seq) > ?1 AND \(seq) <= ?2 ORDER BY \(seq) LIMIT ?3")
        pageStatement = statement
        return statement
    }

    public func readPage(partition: String, after cursor: String, through head: String, maxRecords: Int) async throws
        -> FeedPage
    {
        guard let after = Int64(cursor), let through = Int64(head) else {
            throw FeedArchiveError.data(
                path: nil, message: "sqlite cursor '\(cursor)' or head '\(head)' is not an integer")
        }
        return try readAhead.page(PageKey(after: after, through: through, maxRecords: maxRecords))
    }

    public func close() async {
        readAhead.close()
    }

    private func buildPage(_ key: PageKey) throws -> FeedPage {
        let (after, through, maxRecords) = (key.after, key.through, key.maxRecords)
        let statement = try pageQuery()
        statement.bind(1, after)
        statement.bind(2, through)
        statement.bind(3, Int64(maxRecords))
        defer { statement.reset() }  // ends the read transaction
        // One buffer for the whole page; records are slices of it (no allocation per change).
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(maxRecords * 512, Self.pageByteLimit))
        var pending: [(Position, Int64?, Range<Int>, String?, String)] = []
        pending.reserveCapacity(maxRecords)
        var fields: [EnvelopeFields.Ranges] = []
        fields.reserveCapacity(maxRecords)
        // A page ends at maxRecords rows or once it holds pageByteLimit bytes, whichever comes
        // first (every row ends on a cursor): memory follows bytes, not rows, so a feed of large
        // documents stays within a few pages plus the largest document.
        while bytes.count < Self.pageByteLimit, try statement.step() {
            let sequence = statement.int(0)
            guard sequence >= 0, statement.type(0) == SQLITE_INTEGER else {
                throw FeedArchiveError.data(
                    path: settings.path,
                    message:
                        "table \(settings.table) has \(settings.sequenceColumn) \(statement.string(0).map { "'\($0)'" } ?? "NULL") after \(after): the sequence must be an integer of 0 or more, or the change cannot be given its place in the feed; nothing after \(after) was archived",
                    hint:
                        "let SQLite assign the sequence (INTEGER PRIMARY KEY AUTOINCREMENT), fix the row, or sign the range off with `feedarchive ack-gap` and move on with `feedarchive epoch`"
                )
            }
            let position = Position.sequence(sequence)
            let time = timestamp(statement, 3)
            let ts = time.micros
            if case .unconverted = time {
                noteRow(
                    "\(settings.path): table \(settings.table), \(settings.sequenceColumn) \(sequence): \(settings.timestampColumn ?? "") '\(statement.string(3) ?? "")' is not a time in years 1 to 9999; archived with ts null and the value in source.ts_unconverted"
                )
            }
            let start = bytes.count
            let knownOp = encodeEnvelope(
                statement, sequence: sequence, position: position, timestamp: ts,
                unconvertedTime: ts == nil && !statement.isNull(3), into: &bytes)
            if !knownOp {
                noteRow(
                    "\(settings.path): table \(settings.table), \(settings.sequenceColumn) \(sequence): \(settings.opColumn ?? "") '\(statement.string(4) ?? "")' names no op (c, u, d, r, t, w, insert, create, update, delete); archived as op c with the value in source.op_unconverted"
                )
            }
            fields.append(envelope.fields)
            pending.append(
                (position, ts, start..<bytes.count, statement.isNull(5) ? nil : statement.string(5), String(sequence)))
        }
        let records = pending.map { position, ts, range, pathValue, cursor in
            FeedRecord(position: position, timestamp: ts, line: bytes[range], pathValue: pathValue, cursor: cursor)
        }
        return FeedPage(records: records, fields: fields)
    }
}
