import FeedArchive
import Foundation
import Testing

@testable import FeedArchiveCosmos

/// A page whose items go backwards in `_lsn` is refused as a data error (exit 65), not retried
/// as an outage, and the message says what the operator can do.
@Suite struct OutOfOrderPageTests {
    @Test func itemsGoingBackwardsInAPageAreADataErrorWithAWayForward() throws {
        let body =
            #"{"_rid":"x","Documents":[{"id":"a","pk":"p","_lsn":9,"_ts":1},{"id":"b","pk":"p","_lsn":7,"_ts":1}],"_count":2}"#
        let error = #expect(throws: FeedArchiveError.self) {
            _ = try ChangeFeedEnvelope(partition: "2", mode: .latestVersion, keyPath: ["pk"]).records(
                body: Array(body.utf8), cursorAfter: "c")
        }
        #expect(error?.exitCode == 65)
        #expect(error?.isRetryable == false)
        let text = "\(error.map { "\($0)" } ?? "")"
        #expect(text.contains("feed range 2") && text.contains("_lsn 7 after 9") && text.contains("feedarchive epoch"))
    }

    @Test func anItemBelowTheContinuationOfItsPageIsADataError() throws {
        let body =
            #"{"_rid":"x","Documents":[{"id":"a","pk":"p","_lsn":40,"_ts":1},{"id":"b","pk":"p","_lsn":52,"_ts":1}],"_count":2}"#
        let envelope = ChangeFeedEnvelope(partition: "2", mode: .latestVersion, keyPath: ["pk"])
        let error = #expect(throws: FeedArchiveError.self) {
            _ = try envelope.records(body: Array(body.utf8), cursorAfter: "c", floor: 50)
        }
        #expect(error?.exitCode == 65)
        let text = "\(error.map { "\($0)" } ?? "")"
        #expect(text.contains("_lsn 40 for a read after continuation 50") && text.contains("feedarchive epoch"))
        // Items at or above the continuation are read, with the positions they always had.
        let records = try envelope.records(body: Array(body.utf8), cursorAfter: "c", floor: 40)
        #expect(records.map(\.position.rawValue) == ["00000000000000000040-00000000", "00000000000000000052-00000000"])
    }
}
