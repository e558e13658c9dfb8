import CSQLite
import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// A read-write connection for the tests to play the application that writes the outbox.
final class OutboxWriter {
    let handle: OpaquePointer
    let path: String
    var count = 0

    init(
        path: String,
        schema: String =
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT, created_at TEXT, payload TEXT)"
    ) throws {
        var handle: OpaquePointer?
        guard sqlite3_open(path, &handle) == SQLITE_OK, let handle else {
            throw FeedArchiveError.sourceUnavailable("open \(path)")
        }
        self.handle = handle
        self.path = path
        try exec("PRAGMA journal_mode=WAL")
        try exec(schema)
    }

    deinit { sqlite3_close(handle) }

    func exec(_ sql: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(handle, sql, nil, nil, &error) != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? "?"
            sqlite3_free(error)
            throw FeedArchiveError.sourceUnavailable(message)
        }
    }

    func append(_ rows: Int) throws {
        try exec("BEGIN")
        for _ in 0..<rows {
            count += 1
            let ts = formatRFC3339(microseconds: 1_795_000_000_000_000 + Int64(count) * 1_000_000)
            try exec(
                "INSERT INTO outbox(order_id, created_at, payload) VALUES ('ord-\(count)', '\(ts)', '{\"n\":\(count),\"text\":\"caf\u{e9} \\\"quoted\\\"\"}')"
            )
        }
        try exec("COMMIT")
    }
}

final class SQLiteConformanceFeed: ConformanceFeed {
    let dir = TempDirectory("sqlite-conformance")
    let writer: OutboxWriter
    let settings: SQLiteSourceSettings

    init() throws {
        writer = try OutboxWriter(path: dir.path + "/shop.db")
        let yaml =
            "kind: sqlite\npath: shop.db\ntable: outbox\nsequence_column: seq\ndocument_column: payload\nkey_column: order_id\ntimestamp_column: created_at\n"
        settings = try SQLiteSourceSettings.parse(try ConfigNode.parse(yaml: yaml, file: dir.path + "/job.yaml"))
    }

    func makeSource() async throws -> any FeedSource { try SQLiteSource(settings: settings) }
    func append(_ count: Int) async throws { try writer.append(count) }
}

@Suite struct SQLiteSourceTests {
    @Test func passesTheConformanceSuite() async throws {
        let checks = try await FeedSourceConformance.run(try SQLiteConformanceFeed())
        #expect(checks.contains("resume-exact") && checks.contains("lag") && checks.count >= 16)
    }

    func settings(_ dir: TempDirectory, _ extra: String) throws -> SQLiteSourceSettings {
        try SQLiteSourceSettings.parse(
            try ConfigNode.parse(
                yaml: "kind: sqlite\npath: shop.db\ntable: outbox\n" + extra, file: dir.path + "/job.yaml"))
    }

    @Test func envelopeCopiesTheDocumentAndCarriesKeyAndTime() async throws {
        let feed = try SQLiteConformanceFeed()
        try feed.writer.append(1)
        let source = try await feed.makeSource()
        let token = try await source.resolve(.beginning)
        let page = try await source.readPage(partition: "0", after: token.cursors["0"]!, through: "100", maxRecords: 10)
        let line = String(decoding: try #require(page.records.first).line, as: UTF8.self)
        #expect(
            line
                == #"{"pos":"00000000000000000001","part":"0","op":"c","ts":"2026-11-18T11:06:41Z","key":"ord-1","after":{"n":1,"text":"café \"quoted\""},"before":null,"source":{"table":"outbox","seq":1}}"#
        )
        #expect(page.records.first?.timestamp == 1_795_000_001_000_000)
    }

    @Test func wholeRowBecomesAJSONObjectWhenThereIsNoDocumentColumn() async throws {
        let dir = TempDirectory()
        let writer = try OutboxWriter(
            path: dir.path + "/shop.db",
            schema:
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, price REAL, raw BLOB, note TEXT)"
        )
        try writer.exec("INSERT INTO outbox(name, price, raw, note) VALUES ('mug', 9.5, x'00ff', NULL)")
        let source = try SQLiteSource(settings: try settings(dir, "sequence_column: id\n"))
        let page = try await source.readPage(partition: "0", after: "0", through: "10", maxRecords: 10)
        let line = String(decoding: try #require(page.records.first).line, as: UTF8.self)
        #expect(line.contains(#""after":{"id":1,"name":"mug","price":9.5,"raw":"00FF","note":null}"#))
        #expect(JSONText.isValid(page.records[0].line))
    }

    /// The page says where each line holds the envelope's values (what the transform steps use
    /// instead of scanning the line): exactly where `EnvelopeFields.locate` finds them, for
    /// documents of every shape, keys of every type, times present or not.
    @Test func thePageSaysWhereEachLineHoldsItsValues() async throws {
        let dir = TempDirectory()
        let writer = try OutboxWriter(path: dir.path + "/shop.db")
        let documents = [
            #"{"a": "\"}\\", "b": [1, {"c": null}]}"#, " [1, 2] ", "7", "\"text\"", "not json {", "null",
            "{\n \"pretty\": true\r\n}\n", #"{"ключ": "é"}"#, "",
        ]
        for (number, document) in documents.enumerated() {
            let key = number % 3 == 0 ? "NULL" : number % 3 == 1 ? "'k\(number)'" : "\(number)"
            let time = number % 2 == 0 ? "'2026-01-01T00:00:0\(number)Z'" : "'not a time'"
            try writer.exec(
                "INSERT INTO outbox(order_id, created_at, payload) VALUES (\(key), \(time), '\(document.replacingOccurrences(of: "'", with: "''"))')"
            )
        }
        try writer.exec("INSERT INTO outbox(order_id, created_at, payload) VALUES ('n', NULL, NULL)")
        let source = try SQLiteSource(
            settings: try settings(
                dir, "document_column: payload\nkey_column: order_id\ntimestamp_column: created_at\n"))
        let page = try await source.readPage(partition: "0", after: "0", through: "100", maxRecords: 100)
        #expect(page.records.count == documents.count + 1 && page.fields.count == page.records.count)
        for (record, fields) in zip(page.records, page.fields) {
            let found = try record.line.withUnsafeBufferPointer { try EnvelopeFields.locate($0) }
            #expect(fields == found, "\(String(decoding: record.line, as: UTF8.self))")
        }
    }

    /// A pretty-printed document stays on its envelope's one line (line breaks in valid JSON are
    /// whitespace; a raw one would split the record in two for every reader of the blob).
    @Test func aPrettyPrintedDocumentStaysOnOneLine() async throws {
        let dir = TempDirectory()
        let writer = try OutboxWriter(path: dir.path + "/shop.db")
        try writer.exec(
            "INSERT INTO outbox(order_id, created_at, payload) VALUES ('o', '2026-01-01T00:00:00Z', '{\n  \"a\": [1,\r\n 2],\n  \"s\": \"x\"\n}')"
        )
        let source = try SQLiteSource(settings: try settings(dir, "document_column: payload\n"))
        let page = try await source.readPage(partition: "0", after: "0", through: "10", maxRecords: 10)
        let line = try #require(page.records.first).line
        #expect(!line.contains(0x0A) && !line.contains(0x0D))
        #expect(String(decoding: line, as: UTF8.self).contains(#""after":{   "a": [1,   2],   "s": "x" }"#))
        #expect(JSONText.isValid(line))
    }

    @Test func documentThatIsNotJSONIsKeptAsAString() async throws {
        let dir = TempDirectory()
        let writer = try OutboxWriter(path: dir.path + "/shop.db")
        try writer.exec("INSERT INTO outbox(order_id, created_at, payload) VALUES ('o', 'not a time', 'plain {text')")
        let source = try SQLiteSource(
            settings: try settings(dir, "document_column: payload\ntimestamp_column: created_at\n"))
        let page = try await source.readPage(partition: "0", after: "0", through: "10", maxRecords: 10)
        let line = String(decoding: try #require(page.records.first).line, as: UTF8.self)
        #expect(line.contains(#""after":"plain {text""#) && line.contains(#""document_not_json":true"#))
        #expect(line.contains(#""ts":null"#))
        #expect(JSONText.isValid(page.records[0].line))
    }

    @Test func rowidWithoutAutoincrementIsWarnedAbout() async throws {
        let dir = TempDirectory()
        _ = try OutboxWriter(
            path: dir.path + "/shop.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, payload TEXT)")
        let plain = try SQLiteSource(settings: try settings(dir, "sequence_column: id\n"))
        #expect(try await plain.warnings().first?.contains("AUTOINCREMENT") == true)
        let rowid = try SQLiteSource(settings: try settings(dir, ""))
        #expect(try await rowid.warnings().count == 1)
        let safe = try SQLiteConformanceFeed()
        #expect(try await safe.makeSource().warnings().isEmpty)
    }

    @Test func unknownTableOrColumnIsAJobFileErrorWithItsPlace() async throws {
        let dir = TempDirectory()
        _ = try OutboxWriter(path: dir.path + "/shop.db")
        #expect {
            try SQLiteSource(settings: try settings(dir, "document_column: body\n"))
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 78 && "\(error)".contains("job.yaml:4:18")
                && "\(error)".contains("no column 'body'")
        }
        #expect {
            try SQLiteSource(
                settings: try SQLiteSourceSettings.parse(
                    try ConfigNode.parse(
                        yaml: "kind: sqlite\npath: shop.db\ntable: orders\n", file: dir.path + "/job.yaml")))
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 78 && "\(error)".contains("job.yaml:3:8")
        }
        #expect {
            try SQLiteSource(settings: try settings(dir, "sequence_column: \"seq; DROP TABLE outbox\"\n"))
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 78
        }
    }

    @Test func sequenceGoingBackwardsIsRefused() async throws {
        let feed = try SQLiteConformanceFeed()
        try feed.writer.append(5)
        let source = try await feed.makeSource()
        let token = try await source.resolve(.token("seq=5"))
        try await source.checkContinuity(from: token)
        try feed.writer.exec("DELETE FROM outbox WHERE seq > 2")
        // AUTOINCREMENT remembers the values it handed out: a drained outbox is no rewind.
        try await source.checkContinuity(from: token)
        try feed.writer.exec("UPDATE sqlite_sequence SET seq = 2 WHERE name = 'outbox'")
        await #expect {
            try await source.checkContinuity(from: token)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".contains("went backwards")
                && "\(error)".contains("feedarchive epoch")
        }
    }

    @Test func startAtATime() async throws {
        let feed = try SQLiteConformanceFeed()
        try feed.writer.append(10)
        let source = try await feed.makeSource()
        let token = try await source.resolve(.time(Date(timeIntervalSince1970: 1_795_000_004)))
        #expect(token.cursors["0"] == "3")
    }

    @Test func aReaderNeverBlocksTheWriter() async throws {
        let feed = try SQLiteConformanceFeed()
        try feed.writer.append(100)
        let source = try await feed.makeSource()
        // Between pages the reader holds no transaction: the writer commits at once.
        _ = try await source.readPage(partition: "0", after: "0", through: "100", maxRecords: 10)
        try feed.writer.exec("PRAGMA busy_timeout=0")
        try feed.writer.append(1)
        #expect(feed.writer.count == 101)
    }
}
