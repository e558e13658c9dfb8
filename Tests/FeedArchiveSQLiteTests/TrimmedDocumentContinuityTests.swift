import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@testable import FeedArchiveSQLite

/// Documents are archived without the whitespace around them. A token sealed on a row whose
/// line was written with it (before documents were trimmed) still matches that row: the next
/// run goes on instead of taking the row for a reused sequence value.
@Suite struct TrimmedDocumentContinuityTests {
    @Test func aRowArchivedWithSpaceAroundItsDocumentIsNoReuse() throws {
        let dir = TempDirectory("trimmed")
        let writer = try OutboxWriter(
            path: dir.path + "/shop.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, doc TEXT)")
        try writer.exec(#"INSERT INTO outbox VALUES (1, '{"n": 1}' || char(10))"#)
        try writer.exec(#"INSERT INTO outbox VALUES (2, '{"n": 2}' || char(10))"#)
        let settings = try SQLiteSourceSettings.parse(
            try ConfigNode.parse(
                yaml: "kind: sqlite\npath: shop.db\ntable: outbox\nsequence_column: id\ndocument_column: doc\n",
                file: dir.path + "/job.yaml"))
        let source = try SQLiteSource(settings: settings)
        let (trimmed, spaced) = try source.db { database in
            (
                try #require(try source.currentLine(at: 2, wholeRowColumns: nil, in: database)),
                try #require(try source.currentLine(at: 2, wholeRowColumns: nil, keepingSpace: true, in: database))
            )
        }
        #expect(trimmed != spaced && String(decoding: trimmed, as: UTF8.self).contains(#""after":{"n": 2},"#))
        for line in [trimmed, spaced] {
            let token = ContinuationToken(
                kind: "sqlite", source: nil, cursors: ["0": "2"], extra: ["row": SQLiteSource.lineHash(line)])
            try source.checkSealedFacts(token, cursor: 2)
        }
        // Another document at the cursor is still refused.
        try writer.exec(#"UPDATE outbox SET doc = '{"n": 3}' WHERE id = 2"#)
        let token = ContinuationToken(
            kind: "sqlite", source: nil, cursors: ["0": "2"], extra: ["row": SQLiteSource.lineHash(spaced)])
        #expect(throws: FeedArchiveError.self) { try source.checkSealedFacts(token, cursor: 2) }
    }
}
