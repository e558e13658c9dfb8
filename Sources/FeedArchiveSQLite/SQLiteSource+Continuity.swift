import CSQLite
import FeedArchive
import Foundation

/// What a token remembers of the table, so the next run can tell that the rows it continues
/// from are still the rows it archived.
///
/// - `row`: what identifies the row at the cursor (`N:HASH`, a hash of its first N columns).
///   A different row under the same sequence value means the values were reused: a VACUUM
///   renumbered a rowid table, the table was dropped and re-created, or the newest rows were
///   deleted and their rowids handed out again. The rows now below the cursor were never read.
/// - `w`: how many rows the reads behind the cursor found (`LOW:COUNT`, the rows in
///   LOW < seq <= cursor, up to `settleRows` of them). More rows there now means values the
///   application assigned were committed out of order: a row committed after a higher value
///   was archived, and no read will ever reach it.
extension SQLiteSource {
    /// The rows a token's settle window spans at most, beyond the last batch: the check costs
    /// one count over that stretch of the sequence's index.
    static let settleRows: Int64 = 10_000

    public func seal(_ token: ContinuationToken, previous: ContinuationToken, partition: String, records: Int64)
        async throws -> ContinuationToken
    {
        guard let cursor = token.cursors[Self.partition].flatMap({ Int64($0) }),
            let from = previous.cursors[Self.partition].flatMap({ Int64($0) })
        else { return token }
        var sealed = token
        var window = (low: from, count: records)
        if let (low, count) = Self.window(previous.extra["w"]), low <= from, count + records <= Self.settleRows {
            window = (low, count + records)
        }
        sealed.extra["w"] = "\(window.low):\(window.count)"
        sealed.extra["row"] = try db { try rowIdentity(at: cursor, columns: columnCount, in: $0) }.map {
            "\(columnCount):\($0)"
        }
        return sealed
    }

    static func window(_ text: String?) -> (Int64, Int64)? {
        guard let parts = text?.split(separator: ":"), parts.count == 2, let low = Int64(parts[0]),
            let count = Int64(parts[1]), count >= 0
        else { return nil }
        return (low, count)
    }

    /// A hash of the first `columns` columns of the row whose sequence is `value` (the type and
    /// bytes of each, up to 64 KiB of it, and its length), or nil when there is no such row.
    func rowIdentity(at value: Int64, columns: Int, in database: SQLiteDatabase) throws -> String? {
        let names = columnNames.prefix(columns).map(quoted).joined(separator: ", ")
        let statement = try database.prepare("SELECT \(names) FROM \(table) WHERE \(seq) = ?1")
        statement.bind(1, value)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        var bytes: [UInt8] = []
        for column in 0..<Int32(columns) {
            let type = statement.type(column)
            bytes.append(UInt8(truncatingIfNeeded: type))
            switch type {
            case SQLITE_NULL: break
            case SQLITE_INTEGER: withUnsafeBytes(of: statement.int(column).littleEndian) { bytes += $0 }
            case SQLITE_FLOAT: withUnsafeBytes(of: statement.double(column).bitPattern.littleEndian) { bytes += $0 }
            default:
                let value = statement.text(column)
                withUnsafeBytes(of: Int64(value.count).littleEndian) { bytes += $0 }
                bytes += value.prefix(65536)
            }
        }
        return String(sha256Hex(bytes).prefix(16))
    }

    /// Refuses (65) when the token's facts no longer hold: another row at the cursor, or rows
    /// that appeared behind it.
    func checkSealedFacts(_ token: ContinuationToken, cursor: Int64) throws {
        if let fact = token.extra["row"], let colon = fact.firstIndex(of: ":"),
            let columns = Int(fact[..<colon]), columns > 0, columns <= columnCount
        {
            let archived = String(fact[fact.index(after: colon)...])
            if let now = try db({ try rowIdentity(at: cursor, columns: columns, in: $0) }), now != archived {
                throw FeedArchiveError.data(
                    path: settings.path,
                    message:
                        "the row at \(settings.sequenceColumn) \(cursor) in \(settings.table) is not the row archived there: the sequence values were reused (a VACUUM renumbered the rowids, the table was re-created, or its newest rows were deleted and their rowids handed out again) or the row was changed after it was archived. Rows that now sit at or below \(cursor) were never read",
                    hint:
                        "archive the table again from its first row in a new epoch: `feedarchive epoch JOB --from beginning --reason \"rowids reused\"`. Declare the key INTEGER PRIMARY KEY AUTOINCREMENT so SQLite never reuses a value"
                )
            }
        }
        if let (low, count) = Self.window(token.extra["w"]), low < cursor {
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
                        "\(now - count) row(s) of \(settings.table) with \(settings.sequenceColumn) between \(first) and \(cursor) appeared after that range was archived: the values are assigned by the application and were committed out of order. Those changes are not in the archive",
                    hint:
                        "read the range again in a new epoch, then run (the changes already archived are written twice): `feedarchive epoch JOB --from seq=\(first - 1) --reason \"late rows\"`. Let SQLite assign the sequence (INTEGER PRIMARY KEY AUTOINCREMENT, inserting NULL) so it cannot happen again"
                )
            }
        }
    }
}
