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
        #expect("\(error.map { "\($0)" } ?? "")".contains("n '-3'"))
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
}
