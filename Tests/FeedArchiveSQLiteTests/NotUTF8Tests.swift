import CSQLite
import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// Text that is not UTF-8 keeps every line valid JSON and its bytes recoverable: written as
/// `{"base64":"…"}` and marked in `source`.
@Suite struct NotUTF8Tests {
    @Test func invalidUTF8KeysAndDocumentsAreKeptAsBase64AndMarked() async throws {
        let dir = TempDirectory("not-utf8")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db",
            schema: "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT, at TEXT, doc TEXT)")
        // CAST(x'…' AS TEXT) stores the bytes as they are: SQLite does not check UTF-8.
        try writer.exec(
            "INSERT INTO outbox(k, at, doc) VALUES (CAST(x'6bff00' AS TEXT), CAST(x'c328' AS TEXT), CAST(x'7b2261223a2200ff227d' AS TEXT))"
        )
        try writer.exec(
            "INSERT INTO outbox(k, at, doc) VALUES ('plain', NULL, CAST(x'6e6f74206a736f6e2000c3a9' AS TEXT))")
        let job = try JobConfig.parse(
            yaml: """
                name: t
                source: {kind: sqlite, path: feed.db, table: outbox, sequence_column: seq, document_column: doc, key_column: k, timestamp_column: at}
                archive: {root: lake}
                """, file: dir.path + "/t.yaml")
        _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        let lines = try archivedLines(job)
        #expect(lines.count == 2)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        let key = try #require((first["key"] as? [String: String])?["base64"])
        #expect(Data(base64Encoded: key) == Data([0x6B, 0xFF, 0x00]))
        let after = try #require((first["after"] as? [String: String])?["base64"])
        #expect(Data(base64Encoded: after) == Data([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0x00, 0xFF, 0x22, 0x7D]))
        let source = try #require(first["source"] as? [String: Any])
        #expect(source["key_not_utf8"] as? Bool == true && source["document_not_utf8"] as? Bool == true)
        #expect(source["ts_not_utf8"] as? Bool == true)
        #expect(
            Data(base64Encoded: try #require((source["ts_unconverted"] as? [String: String])?["base64"]))
                == Data([0xC3, 0x28]))
        // Valid UTF-8 with a NUL that is not JSON: a JSON string, NUL escaped.
        #expect(lines[1].contains(#""after":"not json \u0000é""#), "\(lines[1])")
        #expect(!lines[1].contains("not_utf8"))
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }
}
