import CSQLite
import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// A value the source cannot convert never stops the feed and never crashes it: the change is
/// archived with the value in its raw form, marked, and the run warns about it.
@Suite struct UnconvertibleValueTests {
    @Test func timesOutsideYears1To9999AreArchivedRawWithAWarning() async throws {
        let dir = TempDirectory("unconvertible")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db",
            schema: "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, at, doc TEXT)")
        let times = [
            "9e999", "'0000-01-01T00:30:00+01:00'", "-62200000000", "9223372036854775807", "1e300", "'nonsense'",
            "-9e999", "'2026-01-01T00:00:00Z'",
        ]
        for time in times { try writer.exec("INSERT INTO outbox(at, doc) VALUES (\(time), '{}')") }
        let job = try JobConfig.parse(
            yaml: """
                name: t
                source: {kind: sqlite, path: feed.db, table: outbox, sequence_column: seq, document_column: doc, timestamp_column: at, timestamp_unit: s}
                archive: {root: lake}
                """, file: dir.path + "/t.yaml")
        let summary = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        #expect(summary.records == 8)
        let lines = try archivedLines(job)
        #expect(lines.count == 8)
        for line in lines.prefix(7) {
            #expect(line.contains(#""ts":null"#) && line.contains(#""ts_unconverted":""#), "\(line)")
        }
        #expect(lines[0].contains(#""ts_unconverted":"Inf""#))
        #expect(lines[1].contains(#""ts_unconverted":"0000-01-01T00:30:00+01:00""#))
        #expect(lines[3].contains(#""ts_unconverted":"9223372036854775807""#))
        #expect(lines[7].contains(#""ts":"2026-01-01T00:00:00Z""#) && !lines[7].contains("ts_unconverted"))
        #expect(summary.warnings.filter { $0.contains("is not a time in years 1 to 9999") }.count == 7)
        #expect(summary.warnings.contains { $0.contains("seq 3") && $0.contains("'-62200000000'") })
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func sizesAndDurationsTooLargeAreRefusedNotTrapped() throws {
        for text in ["1e30B", "1e300GB", "inf MB", "nanKB", "-1MB", "9223372036854775808B"] {
            #expect(parseByteSize(text) == nil, "\(text)")
        }
        #expect(parseByteSize("64MiB") == 64 << 20)
        #expect(parseByteSize("9223372036854775807") == Int64.max)
        #expect(parseDuration(String(repeating: "9", count: 400) + "s") == nil)
        #expect(parseDuration("200000d") == nil)
        #expect(parseDuration("1h30m") == 5400)
        let dir = TempDirectory("sizes")
        #expect(throws: FeedArchiveError.self) {
            _ = try JobConfig.parse(
                yaml: "name: t\nsource: {kind: sqlite}\narchive: {root: lake}\nbatch: {max_bytes: 1e30B}\n",
                file: dir.path + "/t.yaml")
        }
    }
}
