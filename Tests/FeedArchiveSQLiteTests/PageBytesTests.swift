import CSQLite
import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// Pages are capped by bytes as well as rows, so memory follows the size of the documents, not
/// their count; a document larger than a whole page still archives, alone in its page.
@Suite struct PageBytesTests {
    @Test func largeDocumentsMakeSmallPagesAndAllArrive() async throws {
        let dir = TempDirectory("page-bytes")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT)"
        )
        let large = #"{"data":""# + String(repeating: "x", count: 1_500_000) + #""}"#
        let huge = #"{"data":""# + String(repeating: "y", count: 12_000_000) + #""}"#
        try writer.exec("BEGIN")
        for _ in 0..<12 { try writer.exec("INSERT INTO outbox(doc) VALUES ('\(large)')") }
        try writer.exec("INSERT INTO outbox(doc) VALUES ('\(huge)')")
        try writer.exec("INSERT INTO outbox(doc) VALUES ('{}')")
        try writer.exec("COMMIT")
        let job = try JobConfig.parse(
            yaml:
                "name: t\nsource: {kind: sqlite, path: feed.db, table: outbox, sequence_column: seq, document_column: doc}\narchive: {root: lake}\n",
            file: dir.path + "/t.yaml")
        let source = try SQLiteSource.make(job: job)
        var cursor = try await source.resolve(.beginning).cursors["0"]!
        var pages: [(records: Int, bytes: Int)] = []
        while true {
            let page = try await source.readPage(partition: "0", after: cursor, through: "14", maxRecords: 2000)
            if page.records.isEmpty { break }
            pages.append((page.records.count, page.records.reduce(0) { $0 + $1.line.count }))
            cursor = page.next!
        }
        await source.close()
        #expect(pages.map(\.records).reduce(0, +) == 14)
        // 4 MiB a page: two large documents and the start of a third, then the huge one alone.
        #expect(pages.count >= 5)
        for page in pages where page.records > 1 { #expect(page.bytes < (4 << 20) + 1_600_000, "\(pages)") }
        #expect(pages.contains { $0.records == 1 && $0.bytes > 12_000_000 })

        let summary = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        #expect(summary.records == 14)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }
}
