import FeedArchive
import Foundation
import Testing

@Suite struct TokenTests {
    @Test func roundTrip() throws {
        let token = ContinuationToken(
            kind: "sqlite", source: "0123456789abcdef", cursors: ["0": "42", "b": "x-1"], extra: ["mode": "latest"])
        let text = token.encoded
        #expect(text.hasPrefix("sqlite:"))
        #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
        #expect(try ContinuationToken.decode(text) == token)
        #expect(token.encoded == text)  // stable: sorted keys
    }

    @Test func tokenWithoutCursorsIsRefused() throws {
        // DESIGN.md's example has no cursors map: it is refused as incomplete, not misread.
        #expect(throws: FeedArchiveError.self) { try ContinuationToken.decode("sqlite:eyJ2IjoxLCJzZXEiOjQyfQ") }
    }

    @Test(arguments: ["", "sqlite", ":abc", "sqlite:!!!", "sqlite:eyJ2Ijo5OSwiYyI6e319", "sqlite:bm90IGpzb24"])
    func malformedTokensAreDataErrors(_ text: String) {
        #expect {
            try ContinuationToken.decode(text)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65
        }
    }

    @Test func startSpecs() {
        #expect(StartSpec.parse("beginning") == .beginning)
        #expect(StartSpec.parse("now") == .now)
        #expect(StartSpec.parse("2026-11-18T11:06:40Z") == .time(Date(timeIntervalSince1970: 1_795_000_000)))
        #expect(StartSpec.parse("seq=42") == .token("seq=42"))
    }

    @Test func positionsOrderAsBytes() {
        #expect(Position.sequence(9) < Position.sequence(10))
        #expect(Position.sequence(42).rawValue == "00000000000000000042")
        #expect(Position("../etc") == nil)
        #expect(Position("0000000000000000002A-00000001") != nil)
    }

    /// The byte-level initialiser accepts and refuses exactly what the String one does.
    @Test func positionsFromBytesAreCheckedTheSameWay() {
        for text in [
            "../etc", "0000000000000000002A-00000001", "", "a b", "x/y", "AZaz09-", String(repeating: "9", count: 64),
            String(repeating: "9", count: 65), "é",
        ] {
            let fromBytes = Array(text.utf8).withUnsafeBytes { Position(utf8: $0) }
            #expect(fromBytes == Position(text), "\(text)")
        }
    }
}
