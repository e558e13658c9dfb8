import CSQLite
import FeedArchive
import Foundation

/// What a token remembers of the table, so the next run can tell that the rows it continues
/// from are still the rows it archived.
///
/// - `row`: a hash of the envelope of the change at the cursor, as it was read (`HASH`; with
///   whole-row documents `N:HASH`, the row's first N columns). The same sequence value with
///   another change under it means the values were reused: a VACUUM renumbered a rowid table,
///   the table was dropped and re-created, or the newest rows were deleted and their rowids
///   handed out again. The rows now below the cursor were never read. Only what is archived
///   counts, so an outbox that marks its rows as published after they were read is no reuse.
///   Not kept for a whole-row AUTOINCREMENT table: every column of it is archived, so a flag
///   updated in place would look like another row, and AUTOINCREMENT never reuses a value.
/// - `w`: how many rows the reads behind the cursor found (`LOW:COUNT`, the rows in
///   LOW < seq <= cursor: the last batch and about `settleRows` before it).
/// - `b`: the same for the last batch alone (`FROM:COUNT`), where a row committed late most
///   likely lands, so that old rows deleted from the start of `w` do not hide it.
///   More rows in either stretch now means values the application assigned were committed out
///   of order: a row committed after a higher value was archived, and no read will reach it.
extension SQLiteSource {
    /// The rows a token's settle window spans at most before it slides: when a batch would take
    /// it past this, it restarts about half of it behind the batch. Checking costs one count
    /// over that stretch of the sequence's index at the start of a run.
    static let settleRows: Int64 = 10_000

    public func seal(
        _ token: ContinuationToken, previous: ContinuationToken, partition: String, records: Int64,
        lastLine: ArraySlice<UInt8>
    ) async throws -> ContinuationToken {
        guard token.cursors[Self.partition].flatMap({ Int64($0) }) != nil,
            let from = previous.cursors[Self.partition].flatMap({ Int64($0) })
        else { return token }
        var sealed = token
        var window = (low: from, count: records)
        if let (low, count) = Self.window(previous.extra["w"]), low <= from {
            if count + records <= Self.settleRows {
                window = (low, count + records)
            } else if records < Self.settleRows {
                window = try slidWindow(from: from, records: records)
            }
        }
        sealed.extra["w"] = "\(window.low):\(window.count)"
        sealed.extra["b"] = "\(from):\(records)"
        if settings.documentColumn != nil {
            sealed.extra["row"] = Self.lineHash(lastLine)
        } else if !isAutoincrement {
            sealed.extra["row"] = "\(columnCount):\(Self.lineHash(lastLine))"
        } else {
            sealed.extra["row"] = nil
        }
        return sealed
    }

    /// A window of about `settleRows / 2` rows up to `from`, then the batch's rows.
    private func slidWindow(from: Int64, records: Int64) throws -> (low: Int64, count: Int64) {
        try db { database in
            let half = Self.settleRows / 2
            let low =
                try database.scalarInt(
                    "SELECT \(seq) FROM \(table) WHERE \(seq) <= ?1 ORDER BY \(seq) DESC LIMIT 1 OFFSET ?2",
                    [from, half])
                ?? from
            let behind =
                try database.scalarInt(
                    "SELECT count(*) FROM \(table) WHERE \(seq) > ?1 AND \(seq) <= ?2", [low, from]) ?? 0
            return (low, behind + records)
        }
    }

    static func window(_ text: String?) -> (Int64, Int64)? {
        guard let parts = text?.split(separator: ":"), parts.count == 2, let low = Int64(parts[0]),
            let count = Int64(parts[1]), count >= 0
        else { return nil }
        return (low, count)
    }

    static func lineHash<Bytes: Sequence>(_ line: Bytes) -> String where Bytes.Element == UInt8 {
        String(sha256Hex(Array(line)).prefix(16))
    }

    /// The envelope of the change at `value` as a read would write it now, with a whole-row
    /// document of the first `wholeRowColumns` columns; nil when there is no such row.
    func currentLine(
        at value: Int64, wholeRowColumns: Int?, keepingSpace: Bool = false, in database: SQLiteDatabase
    ) throws -> [UInt8]? {
        let statement = try database.prepare(
            "SELECT \(changeColumnsSQL(wholeRowColumns: wholeRowColumns)) FROM \(table) WHERE \(seq) = ?1")
        statement.bind(1, value)
        defer { statement.reset() }
        guard try statement.step(), statement.type(0) == SQLITE_INTEGER else { return nil }
        let ts = timestamp(statement, 3).micros
        var bytes: [UInt8] = []
        encodeEnvelope(
            statement, sequence: value, position: .sequence(value), timestamp: ts,
            unconvertedTime: ts == nil && !statement.isNull(3), keepingSpace: keepingSpace, into: &bytes)
        return bytes
    }

    /// Refuses (65) when the token's facts no longer hold: another change at the cursor, or
    /// rows that appeared behind it.
    func checkSealedFacts(_ token: ContinuationToken, cursor: Int64) throws {
        if let fact = token.extra["row"] {
            var wholeRowColumns: Int? = nil
            var archived = fact
            if let colon = fact.firstIndex(of: ":") {
                wholeRowColumns = Int(fact[..<colon])
                archived = String(fact[fact.index(after: colon)...])
            }
            let comparable =
                settings.documentColumn == nil
                ? (wholeRowColumns.map { $0 > 0 && $0 <= columnCount } ?? false) : wholeRowColumns == nil
            if comparable,
                let line = try db({ try currentLine(at: cursor, wholeRowColumns: wholeRowColumns, in: $0) }),
                Self.lineHash(line) != archived,
                // A row archived before documents were trimmed: its line as written then.
                try db({ try currentLine(at: cursor, wholeRowColumns: wholeRowColumns, keepingSpace: true, in: $0) })
                    .map(Self.lineHash) != archived
            {
                throw reusedError(cursor: cursor)
            }
        }
        for (name, stretch) in [("b", "the last batch"), ("w", "the rows read before it")] {
            guard let (low, count) = Self.window(token.extra[name]), low < cursor else { continue }
            let now =
                try db {
                    try $0.scalarInt("SELECT count(*) FROM \(table) WHERE \(seq) > ?1 AND \(seq) <= ?2", [low, cursor])
                }
                ?? 0
            if now > count {
                let first =
                    try db { try $0.scalarInt("SELECT min(\(seq)) FROM \(table) WHERE \(seq) > ?1", [low]) } ?? low + 1
                throw FeedArchiveError.data(
                    path: settings.path,
                    message:
                        "\(now - count) row(s) of \(settings.table) with \(settings.sequenceColumn) between \(low + 1) and \(cursor) (\(stretch)) appeared after that range was archived: the values are assigned by the application and were committed out of order. Those changes are not in the archive",
                    hint:
                        "read the range again in a new epoch, then run (the changes already archived are written twice): `feedarchive epoch JOB --from seq=\(first - 1) --reason \"late rows\"`. Let SQLite assign the sequence (INTEGER PRIMARY KEY AUTOINCREMENT, inserting NULL) so it cannot happen again"
                )
            }
        }
    }

    private func reusedError(cursor: Int64) -> FeedArchiveError {
        let archived = settings.documentColumn == nil ? "the whole row" : "its document, key, time or op"
        return FeedArchiveError.data(
            path: settings.path,
            message:
                "the change at \(settings.sequenceColumn) \(cursor) in \(settings.table) is not the change archived there (\(archived) differs): the sequence values were reused (a VACUUM renumbered the rowids, the table was re-created, or its newest rows were deleted and their rowids handed out again), so rows that now sit at or below \(cursor) were never read; or the row was updated in place after it was archived",
            hint:
                "if the values were reused, archive the table again from its first row in a new epoch: `feedarchive epoch JOB --from beginning --reason \"rowids reused\"`. If the row was only updated in place, go on after it: `feedarchive epoch JOB --from seq=\(cursor) --reason \"row updated\"`. Declare the key INTEGER PRIMARY KEY AUTOINCREMENT so SQLite never reuses a value"
        )
    }
}
