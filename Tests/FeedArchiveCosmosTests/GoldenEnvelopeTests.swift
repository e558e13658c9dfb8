import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@testable import FeedArchiveCosmos

/// Fixed change feed pages, in both feed modes, give the recorded envelope lines, positions,
/// times and cursors, byte for byte.
@Suite struct GoldenEnvelopeTests {
    static let latest = [
        #"{"id":"a","pk":"p1","n":1,"t":"é\u00e9 \"q\"","_rid":"r1","_self":"s","_etag":"\"e1\"","_attachments":"attachments/","_ts":1751371200,"_lsn":7}"#,
        #"{"id":"b","pk":"p1","n":2.5e3,"list":[true,false,null,{}],"_rid":"r2","_etag":"\"e2\"","_ts":1751371200,"_lsn":7}"#,
        #"{"id":"c","pk":{"nested":true},"_rid":"r3","_etag":"\"e3\"","_ts":1751371260,"_lsn":9}"#,
        #"{"id":"d","deep":{"pk":1},"_rid":"r4","_etag":"\"e4\"","_lsn":10}"#,
    ]

    static let allVersions = [
        #"{"current":{"id":"a","pk":"p","v":1,"_ts":90,"_lsn":11},"metadata":{"operationType":"create","lsn":11,"crts":90}}"#,
        #"{"current":{"id":"a","pk":"p","v":2,"_rid":"r","_etag":"\"e\"","_ts":100,"_lsn":12},"metadata":{"operationType":"replace","lsn":12,"crts":100,"previousImageLSN":11},"previous":{"id":"a","pk":"p","v":1,"_ts":90,"_lsn":11}}"#,
        #"{"current":{"id":"b","pk":"q","_ts":101,"_lsn":12},"metadata":{"operationType":"upsert","lsn":12,"crts":101}}"#,
        #"{"current":{},"metadata":{"operationType":"delete","lsn":13,"crts":110,"previousImageLSN":12,"id":"a","partitionKey":{"pk":"p"}},"previous":{"id":"a","pk":"p","v":2}}"#,
        #"{"current":{"id":"z","pk":"p","_lsn":14},"metadata":{"operationType":"mystery","lsn":14}}"#,
    ]

    static func render(_ records: [FeedRecord]) -> String {
        records.map {
            "\($0.position.rawValue) \($0.timestamp.map(String.init) ?? "-") \($0.cursor ?? "-") \(String(decoding: $0.line, as: UTF8.self))"
        }
        .joined(separator: "\n") + "\n"
    }

    @Test func fixedPagesGiveTheRecordedEnvelopes() throws {
        let latestBody = #"{"_rid":"x","Documents":[\#(Self.latest.joined(separator: ", "))],"_count":4}"#
        let allBody = #"{"_rid":"x","Documents":[\#(Self.allVersions.joined(separator: ","))],"_count":5}"#
        var text = Self.render(
            try ChangeFeedEnvelope(partition: "3", mode: .latestVersion, keyPath: ["pk"]).records(
                body: Array(latestBody.utf8), cursorAfter: "c9"))
        text += Self.render(
            try ChangeFeedEnvelope(partition: "0-\"x\"", mode: .latestVersion, keyPath: ["deep", "pk"]).records(
                body: Array(latestBody.utf8), cursorAfter: "c10"))
        text += Self.render(
            try ChangeFeedEnvelope(partition: "0", mode: .allVersionsAndDeletes, keyPath: ["pk"]).records(
                body: Array(allBody.utf8), cursorAfter: "c14"))
        let mismatch = try GoldenFile.mismatch(text, name: "cosmos-envelopes.txt")
        #expect(mismatch == nil, "\(mismatch ?? "")")
        #expect(text.split(separator: "\n").count == 13)
    }
}
