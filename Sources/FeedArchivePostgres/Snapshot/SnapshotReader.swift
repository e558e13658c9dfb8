import FeedArchive
import Foundation
import PostgresNIO

/// `backfill --from beginning` for PostgreSQL: a slot holds only what it has not confirmed,
/// so history before it is read as a consistent snapshot of the published tables (op `r`).
///
/// The snapshot is taken while the tables are briefly locked in SHARE mode (writers wait, a
/// few milliseconds): every transaction that touched them committed before the LSN read
/// then, none after, so `source.snapshot_lsn` is exactly where the snapshot meets the slot's
/// stream. The snapshot is exported to a repeatable-read transaction that pages through each
/// table by primary key. Cursors are `snapshot`, `snapshot:<base64url {table, index, key}>` and
/// `snapshot-end`; a resumed backfill (after kill -9) takes a new snapshot and continues after
/// the last archived key, which together with the live stream (that began before it) still
/// holds every row's state. Positions are `0000000000000000-<12-digit index>`: before every streamed
/// change, so verify chains the snapshot in front of the live lineage.
struct SnapshotReader: Sendable {
    struct Table {
        var name: String
        var quoted: String
        var columns: [(name: String, quoted: String, literal: [UInt8], typeOID: UInt32)]
        /// Indexes into `columns` of the primary key, and their SQL types.
        var key: [Int]
        var keyTypes: [String]
        /// The publication's row filter (PostgreSQL 15), applied to the snapshot as to the stream.
        var rowFilter: String?
    }

    var connection: PostgresConnection
    var lsn: LSN
    var tables: [Table]
    var table: Int
    var index: Int
    var lastKey: [String]?
    var expect: String

    static let start = "snapshot"
    static let end = "snapshot-end"

    static func isSnapshot(_ cursor: String) -> Bool { cursor.hasPrefix("snapshot") }

    /// Where a snapshot read got to: the table (by name, so a publication that changed
    /// between a kill and the resume cannot shift it), the next row's index, the last key.
    struct Place: Codable {
        var t: String
        var i: Int
        var k: [String]
    }

    /// Parses `snapshot:<base64url JSON Place>`.
    static func parse(_ cursor: String) throws -> Place? {
        if cursor == start { return nil }
        guard cursor.hasPrefix("snapshot:"), let data = base64URLDecode(String(cursor.dropFirst(9))),
            let place = try? JSONDecoder().decode(Place.self, from: data)
        else { throw FeedArchiveError.data(path: nil, message: "postgres snapshot cursor '\(cursor)' is not valid") }
        return place
    }

    static func cursor(table: String, index: Int, key: [String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return "snapshot:" + base64URLEncode((try? encoder.encode(Place(t: table, i: index, k: key))) ?? Data())
    }

    static func quote(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
    static func literal(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }

    /// Takes the snapshot: lock, read the LSN, export; import it on `connection`; unlock.
    static func begin(
        control: PostgresConnection, connection: PostgresConnection, settings: PostgresSourceSettings, logger: Logger,
        cursor: String
    ) async throws -> SnapshotReader {
        // Column lists and row filters (PostgreSQL 15) limit the snapshot as they limit the stream.
        let names = try await control.query(
            "SELECT schemaname::text, tablename::text, attnames::text[], rowfilter FROM pg_publication_tables WHERE pubname = \(settings.publication) ORDER BY 1, 2",
            logger: logger
        ).collect().map { try $0.decode((String, String, [String]?, String?).self) }
        guard !names.isEmpty else {
            throw FeedArchiveError.data(
                path: nil, message: "publication '\(settings.publication)' has no tables: nothing to snapshot")
        }
        var tables: [Table] = []
        for (schema, name, published, rowFilter) in names {
            let qualified = quote(schema) + "." + quote(name)
            let columns = try await control.query(
                """
                SELECT a.attname::text, a.atttypid::int8, format_type(a.atttypid, a.atttypmod),
                       coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) + 1, 0)::int8
                FROM pg_attribute a
                LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
                WHERE a.attrelid = \(qualified)::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                ORDER BY a.attnum
                """, logger: logger
            ).collect().map { try $0.decode((String, Int64, String, Int64).self) }
            var table = Table(
                name: schema + "." + name, quoted: qualified, columns: [], key: [], keyTypes: [], rowFilter: rowFilter)
            var keyOrder: [(Int64, Int, String)] = []
            for column in columns where published == nil || published!.contains(column.0) || column.3 > 0 {
                let position = table.columns.count
                var literal: [UInt8] = []
                JSONText.appendString(column.0, to: &literal)
                table.columns.append((column.0, quote(column.0), literal, UInt32(truncatingIfNeeded: column.1)))
                if column.3 > 0 { keyOrder.append((column.3, position, column.2)) }
            }
            keyOrder.sort { $0.0 < $1.0 }
            table.key = keyOrder.map(\.1)
            table.keyTypes = keyOrder.map(\.2)
            guard !table.key.isEmpty else {
                throw FeedArchiveError.data(
                    path: nil,
                    message: "table \(table.name) has no primary key: a snapshot pages through tables by primary key")
            }
            tables.append(table)
        }
        _ = try await control.query("BEGIN ISOLATION LEVEL REPEATABLE READ", logger: logger).collect()
        let lsn: LSN
        do {
            // Writers queue behind the lock: give up after a moment rather than stall them (retried).
            _ = try await control.query("SET LOCAL lock_timeout = '3s'", logger: logger).collect()
            _ = try await control.query(
                PostgresQuery(unsafeSQL: "LOCK TABLE \(tables.map(\.quoted).joined(separator: ", ")) IN SHARE MODE"),
                logger: logger
            ).collect()
            let row = try await control.query(
                "SELECT pg_current_wal_insert_lsn()::text, pg_export_snapshot()", logger: logger
            ).collect().first
            guard let (lsnText, snapshot) = try row?.decode((String, String).self), let value = LSN(lsnText) else {
                throw FeedArchiveError.sourceUnavailable("could not export a snapshot")
            }
            lsn = value
            _ = try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger).collect()
            _ = try await connection.query(
                PostgresQuery(unsafeSQL: "SET TRANSACTION SNAPSHOT \(literal(snapshot))"), logger: logger
            ).collect()
            _ = try await control.query("COMMIT", logger: logger).collect()
        } catch {
            _ = try? await control.query("ROLLBACK", logger: logger).collect()
            throw error
        }
        var table = 0
        var index = 0
        var key: [String]?
        if let place = try parse(cursor) {
            guard let found = tables.firstIndex(where: { $0.name == place.t }) else {
                throw FeedArchiveError.data(
                    path: nil,
                    message:
                        "the snapshot being resumed was reading table \(place.t), which publication '\(settings.publication)' no longer has"
                )
            }
            (table, index, key) = (found, place.i, place.k)
        }
        return SnapshotReader(
            connection: connection, lsn: lsn, tables: tables, table: table, index: index, lastKey: key, expect: cursor)
    }

    /// Up to `maxRecords` rows; the snapshot's last row carries `snapshot-end`.
    mutating func nextPage(maxRecords: Int, logger: Logger) async throws -> FeedPage {
        var bytes: [UInt8] = []
        var pending: [(Position, Range<Int>, String)] = []
        var envelope = EnvelopeWriter()
        while table < tables.count && pending.count < maxRecords {
            let current = tables[table]
            let want = maxRecords - pending.count
            // Columns are qualified by the alias: the text casts in the select list carry the
            // same names, and ORDER BY would otherwise sort by the text.
            var sql =
                "SELECT " + current.columns.map { "t." + $0.quoted + "::text" }.joined(separator: ", ") + " FROM "
                + current.quoted + " AS t"
            let keyColumns = current.key.map { "t." + current.columns[$0].quoted }.joined(separator: ", ")
            var conditions: [String] = []
            if let filter = current.rowFilter { conditions.append("(\(filter))") }
            if let lastKey {
                let values = zip(lastKey, current.keyTypes).map { literal($0) + "::" + $1 }.joined(separator: ", ")
                conditions.append("(\(keyColumns)) > (\(values))")
            }
            if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
            sql += " ORDER BY \(keyColumns) LIMIT \(want + 1)"  // a column list, not a row: the key index serves it
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
            for row in rows.prefix(want) {
                var texts: [String?] = []
                texts.reserveCapacity(current.columns.count)
                for cell in row { texts.append(try cell.decode(String?.self)) }
                let start = bytes.count
                let position = Position("0000000000000000-" + zeroPadded(UInt64(index), width: 12))!
                envelope.write(
                    to: &bytes, position: position, op: .read, timestamp: nil,  // a snapshot has no commit time
                    key: { append(object: current.key, of: current, texts: texts, to: &$0) },
                    after: { append(object: Array(current.columns.indices), of: current, texts: texts, to: &$0) },
                    before: EnvelopeWriter.null,
                    source: { out in
                        JSONText.appendLiteral(#""table":"#, to: &out)
                        JSONText.appendString(current.name, to: &out)
                        JSONText.appendLiteral(#","snapshot_lsn":""#, to: &out)
                        out.append(contentsOf: lsn.description.utf8)
                        out.append(0x22)
                    })
                index += 1
                lastKey = current.key.map { texts[$0] ?? "" }
                pending.append(
                    (position, start..<bytes.count, Self.cursor(table: current.name, index: index, key: lastKey!)))
            }
            if rows.count <= want {  // this table is done
                table += 1
                lastKey = nil
            }
        }
        // A page that ended exactly where a table did: is anything left after it?
        if !pending.isEmpty, table < tables.count, lastKey == nil { _ = try await laterTablesAreEmpty(logger: logger) }
        if !pending.isEmpty, table >= tables.count { pending[pending.count - 1].2 = Self.end }
        expect = pending.last?.2 ?? expect
        let page = FeedPage(
            records: pending.map { FeedRecord(position: $0.0, timestamp: nil, line: bytes[$0.1], cursor: $0.2) })
        return page
    }

    /// True when no table from the current one on holds a row (so the page's last row ends the snapshot).
    mutating func laterTablesAreEmpty(logger: Logger) async throws -> Bool {
        while table < tables.count {
            let current = tables[table]
            var sql = "SELECT 1 FROM " + current.quoted + " AS t"
            var conditions: [String] = []
            if let filter = current.rowFilter { conditions.append("(\(filter))") }
            if let lastKey {
                let keyList = "(" + current.key.map { "t." + current.columns[$0].quoted }.joined(separator: ", ") + ")"
                conditions.append(
                    "\(keyList) > ("
                        + zip(lastKey, current.keyTypes).map { Self.literal($0) + "::" + $1 }.joined(separator: ", ")
                        + ")")
            }
            if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
            if try await !connection.query(PostgresQuery(unsafeSQL: sql + " LIMIT 1"), logger: logger).collect().isEmpty
            {
                return false
            }
            table += 1
            lastKey = nil
        }
        return true
    }

    private func append(object columns: [Int], of table: Table, texts: [String?], to out: inout [UInt8]) {
        out.append(0x7B)
        for (number, column) in columns.enumerated() {
            if number > 0 { out.append(0x2C) }
            out.append(contentsOf: table.columns[column].literal)
            out.append(0x3A)
            if var text = texts[column] {
                text.withUTF8 {
                    PGValue.appendJSON(
                        text: UnsafeRawBufferPointer($0), typeOID: table.columns[column].typeOID, to: &out)
                }
            } else {
                JSONText.appendLiteral("null", to: &out)
            }
        }
        out.append(0x7D)
    }

    private func literal(_ text: String) -> String { Self.literal(text) }
}
