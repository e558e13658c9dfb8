import CSQLite
import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// The SQLite source reads `WHERE seq > cursor`: a sequence that repeats a value, or holds one
/// the position cannot express, would lose changes. Such tables are refused, loudly.
@Suite struct SequenceContractTests {
    func job(_ dir: TempDirectory, sequence: String) throws -> JobConfig {
        try JobConfig.parse(
            yaml: """
                name: t
                source: {kind: sqlite, path: feed.db, table: outbox, sequence_column: \(sequence), document_column: doc}
                archive: {root: lake}
                batch: {page_size: 2, max_records: 2}
                """, file: dir.path + "/t.yaml")
    }

    @Test func aSequenceColumnThatCanRepeatIsRefusedNamingTheSetting() throws {
        let dir = TempDirectory("sequence-repeats")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, at_ms INTEGER, doc TEXT)"
        )
        try writer.exec("INSERT INTO outbox(at_ms, doc) VALUES (5, '{}'), (5, '{}'), (5, '{}'), (6, '{}')")
        let error = #expect(throws: FeedArchiveError.self) {
            _ = try SQLiteSource.make(job: try job(dir, sequence: "at_ms"))
        }
        #expect(error?.exitCode == 78)
        #expect("\(error.map { "\($0)" } ?? "")".contains("is not unique"))
    }

    @Test func aPartialUniqueIndexDoesNotMakeTheColumnUnique() throws {
        let dir = TempDirectory("sequence-partial")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, n INTEGER, doc TEXT)")
        try writer.exec("CREATE UNIQUE INDEX outbox_n ON outbox(n) WHERE n > 100")
        try writer.exec("INSERT INTO outbox(n, doc) VALUES (5, '{}'), (5, '{}')")
        let error = #expect(throws: FeedArchiveError.self) {
            _ = try SQLiteSource.make(job: try job(dir, sequence: "n"))
        }
        #expect(error?.exitCode == 78)
    }

    @Test func aUniqueIndexedColumnIsAcceptedAndReadWhole() async throws {
        let dir = TempDirectory("sequence-unique")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, n INTEGER, doc TEXT)")
        try writer.exec("CREATE UNIQUE INDEX outbox_n ON outbox(n)")
        try writer.exec("INSERT INTO outbox(n, doc) VALUES (10, '{}'), (20, '{}'), (30, '{}'), (40, '{}'), (50, '{}')")
        let job = try job(dir, sequence: "n")
        let summary = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        #expect(summary.records == 5)
        #expect(summary.warnings.contains { $0.contains("a column SQLite does not assign") })
        #expect(try archivedLines(job).count == 5)
    }

    @Test func aNegativeOrNonIntegerSequenceValueStopsTheRunLoudlyAndLosesNothing() async throws {
        let dir = TempDirectory("sequence-negative")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, n, doc TEXT)")
        try writer.exec("CREATE UNIQUE INDEX outbox_n ON outbox(n)")
        try writer.exec("INSERT INTO outbox(n, doc) VALUES (-3, '{}'), (1, '{}'), (2, '{}')")
        let job = try job(dir, sequence: "n")
        let error = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        }
        #expect(error?.exitCode == 65)
        #expect("\(error.map { "\($0)" } ?? "")".contains("whose n is -3"))
        #expect(try archivedLines(job).isEmpty)

        try writer.exec("DELETE FROM outbox WHERE n = -3")
        try writer.exec("INSERT INTO outbox(n, doc) VALUES ('x', '{}')")
        let text = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        }
        #expect("\(text.map { "\($0)" } ?? "")".contains("whose n is 'x'"))
        #expect(try archivedLines(job).isEmpty)

        try writer.exec("UPDATE outbox SET n = NULL WHERE n = 'x'")
        let null = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        }
        #expect("\(null.map { "\($0)" } ?? "")".contains("whose n is NULL"))

        try writer.exec("DELETE FROM outbox WHERE n IS NULL")
        let summary = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        #expect(summary.records == 2)
        #expect(try archivedLines(job).count == 2)
    }

    @Test func onlyARealRowidAliasCountsAsTheRowid() async throws {
        // INTEGER PRIMARY KEY DESC is an ordinary column (it can hold NULL and repeat values).
        let desc = TempDirectory("sequence-desc")
        let writer = try OutboxWriter(
            path: desc.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY DESC, doc TEXT)")
        try writer.exec("INSERT INTO outbox VALUES (1, '{}'), (NULL, '{}'), (2, '{}')")
        let descJob = try job(desc, sequence: "id")
        let error = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: descJob, source: try SQLiteSource.make(job: descJob)).run(RunOptions())
        }
        #expect(error?.exitCode == 65)
        #expect("\(error.map { "\($0)" } ?? "")".contains("whose id is NULL"))

        // A WITHOUT ROWID table has no rowid to default to.
        let withoutRowid = TempDirectory("sequence-without-rowid")
        _ = try OutboxWriter(
            path: withoutRowid.path + "/feed.db",
            schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, doc TEXT) WITHOUT ROWID")
        let refused = #expect(throws: FeedArchiveError.self) {
            _ = try SQLiteSource.make(job: try job(withoutRowid, sequence: "rowid"))
        }
        #expect(refused?.exitCode == 78)
        #expect("\(refused.map { "\($0)" } ?? "")".contains("WITHOUT ROWID"))

        // A column named rowid is a column like any other: it must be unique.
        let named = TempDirectory("sequence-named-rowid")
        _ = try OutboxWriter(path: named.path + "/feed.db", schema: "CREATE TABLE outbox (rowid INTEGER, doc TEXT)")
        #expect(throws: FeedArchiveError.self) { _ = try SQLiteSource.make(job: try job(named, sequence: "rowid")) }
    }

    @Test func aNegativeRowidStopsTheRunLoudly() async throws {
        let dir = TempDirectory("sequence-negative-rowid")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT)")
        try writer.exec("INSERT INTO outbox(doc) VALUES ('{}'), ('{}')")
        let job = try job(dir, sequence: "id")
        _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        try writer.exec("INSERT INTO outbox VALUES (-7, '{}')")
        let error = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        }
        #expect(error?.exitCode == 65)
        #expect("\(error.map { "\($0)" } ?? "")".contains("whose id is -7"))
    }

    @Test func anOpValueThatNamesNoOpIsKeptAndReported() async throws {
        let dir = TempDirectory("op-unknown")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db",
            schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, doc TEXT)")
        try writer.exec("INSERT INTO outbox(kind, doc) VALUES ('upsert', '{}'), ('d', '{}'), (NULL, '{}')")
        let job = try JobConfig.parse(
            yaml: """
                name: t
                source: {kind: sqlite, path: feed.db, table: outbox, sequence_column: id, document_column: doc, op_column: kind}
                archive: {root: lake}
                """, file: dir.path + "/t.yaml")
        let summary = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        let lines = try archivedLines(job)
        #expect(lines.count == 3)
        #expect(lines[0].contains(#""op":"c""#) && lines[0].contains(#""op_unconverted":"upsert""#))
        #expect(lines[1].contains(#""op":"d""#) && !lines[1].contains("op_unconverted"))
        #expect(!lines[2].contains("op_unconverted"))
        #expect(summary.warnings.contains { $0.contains("'upsert' names no op") })
    }
}
