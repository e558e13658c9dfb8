import CSQLite
import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// The settings that shape an archive (compression, partition path, time zone, the columns an
/// envelope is made of) are recorded in job.json; a change is refused instead of drifting.
@Suite struct ArchiveShapeTests {
    func job(_ dir: TempDirectory, compression: String = "zstd", document: String = "payload", timeZone: String = "UTC")
        throws -> JobConfig
    {
        try JobConfig.parse(
            yaml: """
                name: shop
                source: {kind: sqlite, path: shop.db, table: outbox, sequence_column: seq, document_column: \(document), timestamp_column: created_at}
                archive: {root: lake, compression: \(compression), time_zone: \(timeZone)}
                """, file: dir.path + "/shop.yaml")
    }

    func run(_ job: JobConfig) async throws -> RunSummary {
        try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
    }

    @Test func aChangedShapingSettingIsRefusedAndNothingIsWritten() async throws {
        let dir = TempDirectory("shape")
        let writer = try OutboxWriter(path: dir.path + "/shop.db")
        try writer.append(5)
        _ = try await run(try job(dir))
        try writer.append(3)
        for (changed, key) in [
            (try job(dir, compression: "lz4"), "archive.compression: 'zstd' -> 'lz4'"),
            (try job(dir, document: "order_id"), "source.document_column: 'payload' -> 'order_id'"),
            (try job(dir, timeZone: "Europe/Paris"), "archive.time_zone: 'UTC' -> 'Europe/Paris'"),
        ] {
            let error = await #expect(throws: FeedArchiveError.self) { _ = try await run(changed) }
            #expect(error?.exitCode == 78)
            #expect("\(error.map { "\($0)" } ?? "")".contains(key))
            #expect(try archivedLines(try job(dir)).count == 5)
        }
        #expect(try await run(try job(dir)).records == 3)
    }

    @Test func anArchiveMadeBeforeShapesWereRecordedGetsItsShapeRecorded() async throws {
        let dir = TempDirectory("shape-old")
        let writer = try OutboxWriter(path: dir.path + "/shop.db")
        try writer.append(2)
        _ = try await run(try job(dir))
        let path = dir.path + "/lake/shop/_feedarchive/job.json"
        var object = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        #expect(object["shape"] != nil)
        object["shape"] = nil
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        try writer.append(1)
        #expect(try await run(try job(dir)).records == 1)
        let recorded = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        #expect((recorded["shape"] as? [String: String])?["source.document_column"] == "payload")
        await #expect(throws: FeedArchiveError.self) { _ = try await run(try job(dir, compression: "none")) }
    }
}
