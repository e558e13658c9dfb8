import FeedArchive
import Foundation
import Testing

@Suite struct ExitCodeTests {
    struct Unknown: Error {}

    @Test func everyErrorHasTheExitCodeCronSees() {
        #expect(FeedArchiveError.exitCode(for: FeedArchiveError.locked(path: "p", holder: "h")) == 75)
        #expect(FeedArchiveError.exitCode(for: FeedArchiveError.sourceRefused(setting: "s", message: "m")) == 78)
        #expect(FeedArchiveError.exitCode(for: FeedArchiveError.interrupted(signal: SIGTERM)) == 143)
        #expect(FeedArchiveError.exitCode(for: CodecError("zstd: truncated")) == 65)
        #expect(FeedArchiveError.exitCode(for: Unknown()) == 74)
        #expect(FeedArchiveError.exitCode(for: CocoaError(.fileReadNoPermission)) == 74)
    }
}
