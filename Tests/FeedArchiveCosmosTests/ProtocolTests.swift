import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@testable import FeedArchiveCosmos

/// The pieces of the REST protocol that need no server: the signature, cursors, settings, envelopes.
@Suite struct ProtocolTests {
    @Test func signatureMatchesTheIssueTestVector() throws {
        let auth = try #require(MasterKeyAuthorization(base64Key: CosmosTestServer.key))
        let header = auth.header(
            verb: "get", resourceType: "docs", resourceLink: "dbs/mydb/colls/mycoll",
            date: "Tue, 01 Jul 2025 12:00:00 GMT")
        #expect(header == "type%3Dmaster%26ver%3D1.0%26sig%3Du5Tmwz%2BhsP%2F1UOlf%2FwiaX8ynvTGE4HZrWWO7bDlnl4w%3D")
        // Verb, type and date are lower-cased; the link is not.
        #expect(
            auth.header(
                verb: "GET", resourceType: "DOCS", resourceLink: "dbs/mydb/colls/mycoll",
                date: "TUE, 01 JUL 2025 12:00:00 GMT") == header)
        #expect(
            auth.header(
                verb: "get", resourceType: "docs", resourceLink: "dbs/MyDb/colls/mycoll",
                date: "Tue, 01 Jul 2025 12:00:00 GMT") != header)
        #expect(
            MasterKeyAuthorization.httpDate(Date(timeIntervalSince1970: 1_751_371_200))
                == "Tue, 01 Jul 2025 12:00:00 GMT")
        #expect(MasterKeyAuthorization(base64Key: "not base64!") == nil)
    }

    @Test func cursorsRoundTrip() throws {
        let cursors = [
            FeedRangeCursor(min: "", max: "40", via: "0", start: .beginning),
            FeedRangeCursor(min: "40", max: "FF", via: "7", start: .etag("\"1234\"")),
            FeedRangeCursor(min: "1F", max: "3A", via: "5", start: .etag("W/opaque,with,commas")),
            FeedRangeCursor(min: "", max: "FF", via: "0", start: .time(1_751_371_200)),
        ]
        for cursor in cursors {
            #expect(FeedRangeCursor(cursor.description) == cursor, "\(cursor)")
        }
        #expect(cursors[1].description == "40,FF,7,e1234")
        #expect(cursors[1].etagNumber == 1234)
        #expect(cursors[2].etagNumber == nil)
        for bad in ["", "1", ",40,0", ",40,,b", "zz,40,0,b", ",40,0,x", ",40,0,tabc", ",40,0,bextra"] {
            #expect(FeedRangeCursor(bad) == nil, "\(bad)")
        }
    }

    func job(_ source: String, in dir: TempDirectory) throws -> JobConfig {
        let yaml = "name: c\n" + source + "\narchive:\n  root: lake\n"
        dir.write("c.yaml", yaml)
        return try JobConfig.parse(yaml: yaml, file: dir.path + "/c.yaml")
    }

    @Test func settingsErrorsNameTheFileAndPlaceAndNeverTheKey() throws {
        let dir = TempDirectory()
        let base = "source:\n  kind: cosmos\n  endpoint: http://127.0.0.1:1/\n  database: d\n  container: c\n"
        func failure(_ source: String) throws -> String {
            do {
                _ = try CosmosSource.make(job: try job(source, in: dir))
                return "no error"
            } catch let error as FeedArchiveError {
                #expect(error.exitCode == 78, "\(error)")
                return error.description
            }
        }
        let noKey = try failure(base)
        #expect(noKey.contains("c.yaml:3:3: source needs the account key"), "\(noKey)")
        let secret = "c2VjcmV0IGtleSB3aXRoIGEgdHlwbw=="
        let badKey = try failure(base + "  key: \(secret)!\n")
        #expect(badKey.contains("c.yaml:7:8: the account key is not base64"))
        #expect(!badKey.contains(secret))
        #expect(
            try failure(base + "  key: ${FEEDARCHIVE_NO_SUCH_VARIABLE}\n").contains(
                "environment variable FEEDARCHIVE_NO_SUCH_VARIABLE is not set"))
        #expect(try failure(base + "  key_file: missing.key\n").contains("cannot read the key file"))
        #expect(
            try failure(base + "  key: \(secret)\n  mode: everything\n").contains(
                "c.yaml:8:9: source.mode must be latest_version or all_versions_and_deletes"))
        #expect(
            try failure(base + "  key: \(secret)\n  max_item_count: 0\n").contains(
                "source.max_item_count must be in 1...10000"))
        #expect(
            try failure(base + "  key: \(secret)\n  colection: x\n").contains("c.yaml:8:3: unknown key 'colection'"))
        #expect(
            try failure(base.replacingOccurrences(of: "http://127.0.0.1:1/", with: "ftp://x")).contains(
                "source.endpoint must be an http(s) URL"))
        #expect(
            try failure(base + "  key: \(secret)\n  mode: all_versions_and_deletes\n").contains(
                "not possible in all_versions_and_deletes mode"))

        dir.write("account.key", secret + "\n")
        let settings = try CosmosSourceSettings.parse(
            try job(base + "  key_file: account.key\n", in: dir).sourceSettings)
        #expect(settings.mode == .latestVersion)
        #expect(settings.maxItemCount == 1000)
    }

    @Test func latestVersionItemsKeepTheDocumentBytesAndShareNoCursorInsideAnLSN() throws {
        let doc1 =
            #"{"id":"a","pk":"p1","n":1,"t":"é\u00e9","_rid":"r1","_self":"s","_etag":"\"e1\"","_attachments":"attachments/","_ts":1751371200,"_lsn":7}"#
        let doc2 = #"{"id":"b","pk":"p1","n":2,"_rid":"r2","_etag":"\"e2\"","_ts":1751371200,"_lsn":7}"#
        let doc3 = #"{"id":"c","pk":{"nested":true},"_rid":"r3","_etag":"\"e3\"","_ts":1751371260,"_lsn":9}"#
        let body = #"{"_rid":"x","Documents":[\#(doc1), \#(doc2),\#(doc3)],"_count":3}"#
        let records = try ChangeFeedEnvelope(partition: "3", mode: .latestVersion, keyPath: ["pk"]).records(
            body: Array(body.utf8), cursorAfter: "c9")
        #expect(
            records.map(\.position.rawValue) == [
                "00000000000000000007-00000000", "00000000000000000007-00000001", "00000000000000000009-00000000",
            ])
        #expect(records.map(\.cursor) == [nil, nil, "c9"])
        #expect(records[0].timestamp == 1_751_371_200_000_000)
        let line = String(decoding: records[0].line, as: UTF8.self)
        #expect(
            line
                == #"{"pos":"00000000000000000007-00000000","part":"3","op":"w","ts":"2025-07-01T12:00:00Z","key":{"id":"a","pk":"p1"},"after":\#(doc1),"before":null,"source":{"_rid":"r1","_etag":"\"e1\"","_lsn":7,"_ts":1751371200}}"#
        )
        #expect(String(decoding: records[2].line, as: UTF8.self).contains(#""key":{"id":"c","pk":{"nested":true}}"#))
        for record in records { #expect(JSONText.isValid(record.line)) }

        let broken = #"{"Documents":[{"id":"a","_lsn":1,"x":[1,}]}"#
        #expect(throws: FeedArchiveError.self) {
            _ = try ChangeFeedEnvelope(partition: "0", mode: .latestVersion, keyPath: ["pk"]).records(
                body: Array(broken.utf8), cursorAfter: "c")
        }
    }

    /// The body scanner skips strings eight bytes at a time: escapes at every offset of a word
    /// must neither end a string early nor hide its end; documents are checked as they are copied.
    @Test func stringsWithEscapesAtEveryOffsetKeepTheirDocumentsWhole() throws {
        var docs: [String] = []
        for offset in 0..<17 {
            let pad = String(repeating: "x", count: offset)
            docs.append(
                #"{"id":"d\#(offset)","pk":"p","s":"\#(pad)\"q\\\"\#(pad)","t":"\#(pad)\\","_rid":"r","_etag":"e","_ts":1,"_lsn":\#(offset + 1)}"#
            )
        }
        let body = #"{"_rid":"x","Documents":[\#(docs.joined(separator: ","))],"_count":\#(docs.count)}"#
        let records = try ChangeFeedEnvelope(partition: "0", mode: .latestVersion, keyPath: ["pk"]).records(
            body: Array(body.utf8), cursorAfter: "c")
        #expect(records.count == docs.count)
        for (record, doc) in zip(records, docs) {
            let line = String(decoding: record.line, as: UTF8.self)
            #expect(line.contains(#""after":\#(doc),"before""#))
            let parsed = try JSONSerialization.jsonObject(with: Data(record.line)) as? [String: Any]
            #expect((parsed?["after"] as? [String: Any])?["id"] as? String != nil)
        }

        let rawTab = #"{"Documents":[{"id":"a","pk":"p","s":"tab\#there","_lsn":5}],"_count":1}"#
        let error = #expect(throws: FeedArchiveError.self) {
            _ = try ChangeFeedEnvelope(partition: "0", mode: .latestVersion, keyPath: ["pk"]).records(
                body: Array(rawTab.utf8), cursorAfter: "c")
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("the document at _lsn 5 is not valid JSON"))
        let noDocuments = #"{"_rid":"x","_count":0}"#
        #expect(throws: FeedArchiveError.self) {
            _ = try ChangeFeedEnvelope(partition: "0", mode: .latestVersion, keyPath: ["pk"]).records(
                body: Array(noDocuments.utf8), cursorAfter: "c")
        }
    }

    @Test func allVersionsItemsTakeTheirOpFromMetadataAndBeforeFromPrevious() throws {
        let current = #"{"id":"a","pk":"p","v":2,"_rid":"r","_etag":"\"e\"","_ts":100,"_lsn":12}"#
        let previous = #"{"id":"a","pk":"p","v":1,"_ts":90,"_lsn":11}"#
        let items = [
            #"{"current":{"id":"a","pk":"p","v":1,"_ts":90,"_lsn":11},"metadata":{"operationType":"create","lsn":11,"crts":90}}"#,
            #"{"current":\#(current),"metadata":{"operationType":"replace","lsn":12,"crts":100,"previousImageLSN":11},"previous":\#(previous)}"#,
            #"{"current":{},"metadata":{"operationType":"delete","lsn":13,"crts":110,"previousImageLSN":12,"id":"a","partitionKey":{"pk":"p"}},"previous":\#(current)}"#,
        ]
        let body = #"{"_rid":"x","Documents":[\#(items.joined(separator: ","))],"_count":3}"#
        let records = try ChangeFeedEnvelope(partition: "0", mode: .allVersionsAndDeletes, keyPath: ["pk"]).records(
            body: Array(body.utf8), cursorAfter: "c")
        let lines = records.map { String(decoding: $0.line, as: UTF8.self) }
        #expect(lines[0].contains(#""op":"c""#) && lines[0].contains(#""before":null"#))
        #expect(lines[1].contains(#""op":"u""#) && lines[1].contains(#""after":\#(current),"before":\#(previous)"#))
        #expect(
            lines[2].contains(#""op":"d""#)
                && lines[2].contains(#""key":{"id":"a","pk":"p"},"after":null,"before":\#(current)"#))
        #expect(lines[2].contains(#""operationType":"delete","previousImageLSN":12"#))
        #expect(records[2].timestamp == 110_000_000)
    }
}
