import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@testable import FeedArchivePostgres

/// The pgoutput decoder on bytes captured from a PostgreSQL 15 server (no server needed), and
/// seeded mutation fuzzing: malformed messages are errors, never crashes.
struct PGOutputDecoderTests {
    /// BEGIN, RELATION public.t (id int key, v text, j jsonb), INSERT, COMMIT — as the server sent them.
    static let captured: [String] = [
        "420000000001505890000303e9f77af0ba000002d6",
        "52000040007075626c69630074006400030169640000000017ffffffff00760000000019ffffffff006a0000000edaffffffff",
        "49000040004e000374000000013174000000016174000000087b2278223a20317d",
        "4300000000000150589000000000015058c0000303e9f77af0ba",
    ]

    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    @Test func decodesACapturedTransaction() throws {
        var decoder = PGOutputDecoder()
        var page = PageBuilder(capacity: 1024)
        var outcomes: [String] = []
        for hex in Self.captured {
            let outcome = try Self.bytes(hex).withUnsafeBytes { try decoder.decode($0, into: &page) }
            switch outcome {
            case .none: outcomes.append("none")
            case .records: outcomes.append("records")
            case .commit(let end, let had):
                outcomes.append("commit \(end) \(had)")
                page.endTransaction(cursor: end.description)
            }
        }
        #expect(outcomes == ["none", "none", "records", "commit 0/15058C0 true"])
        let record = try #require(page.page(resume: nil).records.first)
        #expect(record.position.rawValue == "0000000001505890-00000000")
        #expect(record.cursor == "0/15058C0")
        let line = String(decoding: record.line, as: UTF8.self)
        #expect(line.contains(#""key":{"id":1},"after":{"id":1,"v":"a","j":{"x": 1}}"#), "\(line)")
        #expect(line.contains(#""source":{"table":"public.t","xid":726,"lsn":"0/1505890"}"#), "\(line)")
        #expect(JSONText.isValid(record.line))
    }

    @Test func skipsTransactionsBeforeTheCursor() throws {
        var decoder = PGOutputDecoder()
        decoder.skipBefore = LSN(0x15058C0)  // the checkpoint is past this transaction
        var page = PageBuilder(capacity: 1024)
        for hex in Self.captured { _ = try Self.bytes(hex).withUnsafeBytes { try decoder.decode($0, into: &page) } }
        #expect(page.count == 0)
    }

    @Test func lsnTextRoundTrips() {
        #expect(LSN("16/B374D848")?.value == 0x16_B374_D848)
        #expect(LSN("16/B374D848")?.description == "16/B374D848")
        for text in ["0/0", "0/5AD5AF8", "1/0", "FFFFFFFF/FFFFFFFF", "A/10"] {
            #expect(LSN(text)?.description == text)
            var bytes: [UInt8] = []
            LSN(text)!.appendText(to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == text)
        }
        #expect(LSN(0x1505890).fixedWidth == "0000000001505890")
        #expect(LSN("x/1") == nil && LSN("1") == nil && LSN("123456789/0") == nil)
    }

    /// Truncations, flipped bytes, random lengths: every message decodes or throws.
    @Test func mutatedMessagesNeverCrash() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["FEEDARCHIVE_FUZZ_ITERATIONS"] ?? "") ?? 3000
        var random = SplitMix64(state: 0x5EED)
        func next() -> UInt64 { random.next() }
        let seeds = Self.captured.map(Self.bytes)
        var decoded = 0
        var rejected = 0
        for _ in 0..<iterations {
            var decoder = PGOutputDecoder()
            var page = PageBuilder(capacity: 256)
            // A valid prefix (BEGIN + RELATION) so the mutated change reaches the tuple decoder.
            _ = try seeds[0].withUnsafeBytes { try decoder.decode($0, into: &page) }
            _ = try seeds[1].withUnsafeBytes { try decoder.decode($0, into: &page) }
            var message = seeds[Int(next() % UInt64(seeds.count))]
            for _ in 0..<(1 + next() % 4) {
                switch next() % 3 {
                case 0 where !message.isEmpty:
                    message[Int(next() % UInt64(message.count))] = UInt8(truncatingIfNeeded: next())
                case 1 where !message.isEmpty: message.removeLast(Int(next() % UInt64(message.count)))
                default: message.append(UInt8(truncatingIfNeeded: next()))
                }
            }
            do {
                _ = try message.withUnsafeBytes { try decoder.decode($0, into: &page) }
                decoded += 1
                for record in page.page(resume: nil).records { #expect(JSONText.isValid(record.line)) }
            } catch is PGOutputError {
                rejected += 1
            }
        }
        #expect(decoded + rejected == iterations)
        #expect(rejected > 0)
    }

    @Test func arrayLiteralsBecomeJSONArrays() {
        func json(_ text: String, _ oid: UInt32) -> String {
            var out: [UInt8] = []
            var text = text
            text.withUTF8 { PGValue.appendJSON(text: UnsafeRawBufferPointer($0), typeOID: oid, to: &out) }
            return String(decoding: out, as: UTF8.self)
        }
        #expect(json("{1,NULL,3}", 1007) == "[1,null,3]")
        #expect(json(#"{"a b","c\"d",NULL,e}"#, 1009) == #"["a b","c\"d",null,"e"]"#)
        #expect(json("{{1,2},{3,4}}", 1007) == "[[1,2],[3,4]]")
        #expect(json("[0:1]={7,8}", 1007) == "[7,8]")
        #expect(json("{}", 1009) == "[]")
        #expect(json("{1,2", 1007) == #""{1,2""#)  // not a literal: kept as text
        #expect(json("{NaN,1.5}", 1022) == #"["NaN",1.5]"#)
        #expect(json("{t,f}", 1000) == "[true,false]")
    }

    /// Integer columns skip the JSON number scan when the text is a plain integer; the result
    /// must be what the scan gives: the text itself when it is a JSON number, a string otherwise.
    @Test func integerTextIsANumberExactlyWhenJSONSaysSo() {
        var generator = SplitMix64(state: 41)
        let alphabet = Array("0123456789-+.eE x".utf8)
        var plain = 0
        for iteration in 0..<20_000 {
            let length = iteration < 100 ? iteration % 4 : Int.random(in: 0...8, using: &generator)
            let text = (0..<length).map { _ in
                alphabet[Int.random(in: 0..<(iteration % 3 == 0 ? 11 : alphabet.count), using: &generator)]
            }
            var out: [UInt8] = []
            text.withUnsafeBytes { PGValue.appendJSON(text: $0, typeOID: 20, to: &out) }
            let isNumber =
                text.withUnsafeBufferPointer { JSONText.isValid($0) }
                && (text.first == UInt8(ascii: "-") || text.first.map { $0 >= 0x30 && $0 <= 0x39 } == true)
            if text.withUnsafeBufferPointer({ PGValue.isPlainInteger($0) }) {
                plain += 1
                #expect(isNumber, "\(String(decoding: text, as: UTF8.self)) taken for an integer")
            }
            #expect(
                out == (isNumber ? text : Array("\"\(String(decoding: text, as: UTF8.self))\"".utf8)),
                "\(String(decoding: text, as: UTF8.self))")
        }
        #expect(plain > 1_000)
    }

    /// Text values: ASCII escaped in one pass, valid UTF-8 kept, text with invalid bytes (an
    /// SQL_ASCII database holds any) kept whole as `{"base64": …}`; every result is valid JSON.
    @Test func textValuesAreAlwaysValidJSONAndKeepTheirBytes() throws {
        func json(_ bytes: [UInt8]) -> [UInt8] {
            var out: [UInt8] = []
            bytes.withUnsafeBytes { PGValue.appendJSON(text: $0, typeOID: 25, to: &out) }
            return out
        }
        #expect(
            json(Array("plain text, longer than eight bytes".utf8))
                == Array(#""plain text, longer than eight bytes""#.utf8))
        #expect(
            json(Array("tab\there \"quoted\" line\nbreak".utf8)) == Array(#""tab\there \"quoted\" line\nbreak""#.utf8))
        #expect(json(Array("naïve café ünïcødé".utf8)) == Array(#""naïve café ünïcødé""#.utf8))
        let invalid: [UInt8] = Array("bad ".utf8) + [0xFF, 0xC3] + Array(" bytes, then more text".utf8)
        let out = json(invalid)
        let decoded = try #require(
            try JSONSerialization.jsonObject(with: Data(out), options: .fragmentsAllowed) as? [String: String])
        #expect(decoded.keys.sorted() == ["base64"])
        #expect(Data(base64Encoded: decoded["base64"] ?? "").map(Array.init) == invalid)
        // The same for a JSON column whose text is not JSON, and inside an array.
        var inArray: [UInt8] = []
        let literal: [UInt8] = Array("{a,".utf8) + [0xFF] + Array("}".utf8)
        literal.withUnsafeBytes { PGValue.appendJSON(text: $0, typeOID: 1009, to: &inArray) }
        #expect((try? JSONSerialization.jsonObject(with: Data(inArray))) != nil)
    }
}
