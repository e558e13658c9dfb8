import FeedArchive
import Foundation
import Testing

@Suite struct JSONTextTests {
    @Test(arguments: [
        #"{}"#, #"[]"#, #"{"a":[1,2.5,-3e10,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"]}"#, #" "héllo ☃ 𝄞" "#, "0",
        "-0.5E+3",
        #"{"nested":{"deep":[[[[]]]]}}"#,
    ])
    func acceptsValidJSON(_ text: String) {
        #expect(JSONText.isValid(Array(text.utf8)))
    }

    @Test(arguments: [
        "", "{", "}", #"{"a"}"#, #"{"a":}"#, "[1,]", "01", "1.", "-", "tru", #""\x""#, "\"tab\there\"", #"{"a":1}x"#,
        #"{'a':1}"#, "[1 2]", "NaN",
    ])
    func rejectsInvalidJSON(_ text: String) {
        #expect(!JSONText.isValid(Array(text.utf8)))
    }

    @Test func rejectsInvalidUTF8AndDeepNesting() {
        #expect(!JSONText.isValid([0x22, 0xC3, 0x28, 0x22]))
        #expect(!JSONText.isValid([0x22, 0xED, 0xA0, 0x80, 0x22]))  // a surrogate
        #expect(!JSONText.isValid(Array(repeating: 0x5B, count: 100_000)))
    }

    /// The eight-bytes-at-a-time scan must see a special byte at every offset of a word.
    @Test func longStringsCatchSpecialBytesAtEveryOffset() {
        for offset in 0..<24 {
            let prefix = String(repeating: "a", count: offset)
            let suffix = String(repeating: "b", count: 17)
            #expect(JSONText.isValid(Array("\"\(prefix)\\\"\(suffix)\"".utf8)), "escaped quote at \(offset)")
            #expect(JSONText.isValid(Array("\"\(prefix)é\(suffix)\"".utf8)), "non-ASCII at \(offset)")
            #expect(!JSONText.isValid(Array("\"\(prefix)\t\(suffix)\"".utf8)), "raw tab at \(offset)")
            #expect(!JSONText.isValid(Array("\"\(prefix)\u{7F}\u{0}\(suffix)\"".utf8)), "NUL at \(offset)")
            #expect(!JSONText.isValid(Array("\"\(prefix)\(suffix)".utf8) + [0xFF, 0x22]), "invalid UTF-8 at \(offset)")
            #expect(!JSONText.isValid(Array("\"\(prefix)\"\(suffix)\"".utf8)), "bare quote at \(offset)")
        }
    }

    /// The one-pass check-and-copy of the sources' hot path: a valid document is appended as
    /// `appendValue` would (raw line breaks become spaces), an invalid one appends nothing.
    @Test func appendIfValidCopiesValidDocumentsOnly() throws {
        var out = Array("prefix:".utf8)
        let pretty = "{\n  \"a\": [1,\r\n 2],\n  \"b\": \"x\"\n}"
        #expect(JSONText.appendIfValid(Array(pretty.utf8)[...], to: &out))
        #expect(String(decoding: out, as: UTF8.self) == "prefix:{   \"a\": [1,   2],   \"b\": \"x\" }")
        let parsed = try JSONSerialization.jsonObject(with: Data(out.dropFirst(7))) as? [String: Any]
        #expect(parsed?["b"] as? String == "x")
        let compact = Array(#"{"k":"v","n":[1,2,{"z":null}]}"#.utf8)
        out.removeAll()
        #expect(JSONText.appendIfValid(compact[...], to: &out))
        #expect(out == compact)
        for invalid in ["{\"a\":1", "[1,]", "\"line\nbreak\"", ""] {
            out = [0x41]
            #expect(!JSONText.appendIfValid(Array(invalid.utf8)[...], to: &out), "\(invalid)")
            #expect(out == [0x41], "nothing appended for \(invalid)")
        }
        // Whitespace around the value is not part of it.
        for (spaced, value) in [(" \t{\"a\": 1}\r\n", "{\"a\": 1}"), ("  7 ", "7"), ("\n\"x y\"\n", "\"x y\"")] {
            out.removeAll()
            #expect(JSONText.appendIfValid(Array(spaced.utf8)[...], to: &out))
            #expect(String(decoding: out, as: UTF8.self) == value)
        }
    }

    /// Lines written before documents were trimmed keep whitespace around a value: the fields
    /// are still found, without it.
    @Test func envelopeFieldsStepOverWhitespaceAroundValues() throws {
        let line = Array(
            #"{"pos":"1","part":"0","op":"c","ts":null,"key": 7 ,"after":  {"a": [1, 2]}  ,"before":null,"source":{"t":1}}"#
                .utf8)
        let ranges = try line.withUnsafeBufferPointer { try EnvelopeFields.split($0) }
        let values = ranges.map { String(decoding: line[$0], as: UTF8.self) }
        #expect(values == [#""1""#, #""0""#, #""c""#, "null", "7", #"{"a": [1, 2]}"#, "null", #"{"t":1}"#])
    }

    @Test func escapedStringsDecodeToTheOriginal() throws {
        let original = "quote \" backslash \\ newline \n tab \t bell \u{07} nul \u{0} ünïcødé"
        var out: [UInt8] = []
        JSONText.appendString(original, to: &out)
        let decoded = try JSONSerialization.jsonObject(with: Data(out), options: .fragmentsAllowed) as? String
        #expect(decoded == original)
    }

    /// The eight-at-a-time scan escapes exactly what the byte-at-a-time rule does, wherever
    /// the special bytes fall, and tells ASCII text as a plain test does.
    @Test func stringEscapingMatchesTheByteRule() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [
            0x00, 0x07, 0x09, 0x0A, 0x0D, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x41, 0x7A, 0x7F, 0xC3, 0xA9,
        ]
        for _ in 0..<5_000 {
            let length = Int.random(in: 0...40, using: &generator)
            var bytes = (0..<length).map { _ in UInt8(ascii: "x") }
            for _ in 0..<Int.random(in: 0...3, using: &generator) where length > 0 {
                bytes[Int.random(in: 0..<length, using: &generator)] = alphabet.randomElement(using: &generator)!
            }
            var fast: [UInt8] = []
            let ascii = bytes.withUnsafeBufferPointer { JSONText.appendString(utf8: $0, to: &fast) }
            var slow: [UInt8] = [0x22]
            for byte in bytes {
                switch byte {
                case 0x22: slow += [0x5C, 0x22]
                case 0x5C: slow += [0x5C, 0x5C]
                case 0x0A: slow += [0x5C, 0x6E]
                case 0x0D: slow += [0x5C, 0x72]
                case 0x09: slow += [0x5C, 0x74]
                case 0..<0x20: slow += Array(String(format: "\\u%04x", Int(byte)).utf8)
                default: slow.append(byte)
                }
            }
            slow.append(0x22)
            #expect(fast == slow, "\(bytes)")
            #expect(ascii == bytes.allSatisfy { $0 < 0x80 }, "\(bytes)")
        }
    }

    @Test func integersMatchSwift() {
        for value: Int64 in [0, 7, -7, 1_234_567_890, .max, .min] {
            var out: [UInt8] = []
            JSONText.appendInt(value, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(value))
        }
    }

    @Test func timestampsFormatAndParse() {
        #expect(formatRFC3339(microseconds: 0) == "1970-01-01T00:00:00Z")
        #expect(formatRFC3339(microseconds: baseTime) == "2026-11-18T11:06:40Z")
        #expect(formatRFC3339(microseconds: baseTime + 120_500) == "2026-11-18T11:06:40.1205Z")
        #expect(formatRFC3339(microseconds: -1) == "1969-12-31T23:59:59.999999Z")
        for text in ["2026-11-18T11:06:40Z", "2026-11-18 11:06:40", "2026-11-18T12:06:40+01:00"] {
            var copy = text
            #expect(copy.withUTF8 { parseTimestampMicros($0) } == baseTime)
        }
        var bad = "2026-13-01T00:00:00Z"
        #expect(bad.withUTF8 { parseTimestampMicros($0) } == nil)
    }

    /// Formatting and parsing agree over years 1…9999 and every fraction length.
    @Test func timestampsRoundTripAcrossTheCalendar() {
        var generator = SystemRandomNumberGenerator()
        let first: Int64 = -62_135_596_800_000_000  // 0001-01-01T00:00:00Z
        let last: Int64 = 253_402_300_799_999_999  // 9999-12-31T23:59:59.999999Z
        var values: [Int64] = [first, last, 0, -1, 1, 951_782_400_000_000, 1_795_000_000_000_010]
        for _ in 0..<20_000 { values.append(Int64.random(in: first...last, using: &generator)) }
        for _ in 0..<2_000 { values.append(Int64.random(in: first...last, using: &generator) / 1_000_000 * 1_000_000) }
        for value in values {
            var text = formatRFC3339(microseconds: value)
            #expect(text.utf8.count <= 32 && text.hasSuffix("Z") && !text.contains(".0Z"), "\(value): \(text)")
            #expect(text.withUTF8 { parseTimestampMicros($0) } == value, "\(value): \(text)")
        }
        #expect(formatRFC3339(microseconds: first) == "0001-01-01T00:00:00Z")
        #expect(formatRFC3339(microseconds: last) == "9999-12-31T23:59:59.999999Z")
        // Beyond RFC 3339's four-digit years: ISO 8601's expanded form, never cut short
        // (expected values computed with Python's calendar shifted by 400-year cycles).
        #expect(formatRFC3339(microseconds: 253_402_300_800_000_000) == "10000-01-01T00:00:00Z")
        #expect(formatRFC3339(microseconds: .max) == "294247-01-10T04:00:54.775807Z")
        #expect(formatRFC3339(microseconds: .min) == "-290308-12-21T19:59:05.224192Z")
        #expect(formatRFC3339(microseconds: -64_000_000_000_000_000) == "-0059-12-03T06:13:20Z")
    }

    /// Lines written across several chunks come back whole and in order, each line inside one
    /// chunk, every chunk below the mmap threshold unless a single line is bigger.
    @Test func lineChunksKeepEveryLineWholeAcrossChunks() {
        var chunks = LineChunks()
        var expected: [[UInt8]] = []
        var generator = SystemRandomNumberGenerator()
        for number in 0..<3_000 {
            let length = number == 1_500 ? 600_000 : Int.random(in: 0...900, using: &generator)
            let line = (0..<length).map { UInt8(truncatingIfNeeded: number &+ $0) }
            let start = chunks.startLine()
            chunks.out.append(contentsOf: line)
            chunks.endLine(start)
            expected.append(line)
        }
        let lines = chunks.finish()
        #expect(lines.count == expected.count)
        #expect(lines.map { Array($0) } == expected)
        // Lines of one chunk share its buffer: a few chunks hold them all.
        let chunkStarts = Set(
            lines.filter { !$0.isEmpty }.map { line in
                line.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } - UInt(line.startIndex)
            })
        #expect(chunkStarts.count > 3 && chunkStarts.count < 100, "\(chunkStarts.count) chunks")
    }
}

/// `ByteWriter` (the pointer-based sink of the PostgreSQL envelope builder) must write exactly
/// what `[UInt8]` gets from the same writers, across its growth from a tiny capacity.
@Suite struct ByteWriterTests {
    @Test func writersProduceTheSameBytesIntoEitherSink() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = Array("ab\"\\\n\r\t\u{1}\u{1f}{}[]:, 0123456789".utf8)  // ASCII: any pick is valid UTF-8
        var writer = ByteWriter(capacity: 1)  // 16 bytes at least: grows many times
        var array: [UInt8] = []
        for round in 0..<2_000 {
            let length = Int.random(in: 0...40, using: &generator)
            let text = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            let number = Int64.random(in: Int64.min...Int64.max, using: &generator)
            for sinkIsWriter in [true, false] {
                func write<Sink: ByteOutput & ~Copyable>(_ out: inout Sink) {
                    text.withUnsafeBufferPointer { _ = JSONText.appendString(utf8: $0, to: &out) }
                    JSONText.appendLiteral(",", to: &out)
                    JSONText.appendInt(round % 3 == 0 ? 0 : number, to: &out)
                    out.append(0x2C)
                    let document = Array(#"{"a":[1,"x"],"#.utf8) + [0x0A] + Array(#""b":null}"#.utf8)
                    _ = document.withUnsafeBufferPointer { JSONText.appendIfValid($0, to: &out) }
                    let mark = out.count
                    out.append(contentsOf: [UInt8](repeating: 0x7A, count: round % 5))
                    out.truncate(to: mark)  // taking back what was begun leaves no trace
                    out.append(0x0A)
                }
                if sinkIsWriter { write(&writer) } else { write(&array) }
            }
            #expect(writer.count == array.count)
        }
        #expect(Array(writer.bytes) == array)
        let text = String(decoding: array, as: UTF8.self)
        for line in text.split(separator: "\n").prefix(50) {
            let parts = try JSONSerialization.jsonObject(with: Data(("[" + line + "]").utf8)) as? [Any]
            #expect(parts?.count == 3, "\(line)")
        }
        writer.removeAll()
        #expect(writer.count == 0 && writer.bytes.isEmpty)
    }

    /// Appending the writer's own bytes when that makes it grow: they are read before the old
    /// buffer is freed (they were read after it, and came back as garbage).
    @Test func appendingItsOwnBytesAcrossGrowthKeepsThem() {
        var writer = ByteWriter(capacity: 16)
        for byte in UInt8(0)..<16 { writer.append(byte) }
        for _ in 0..<4 { writer.append(contentsOf: writer.bytes) }  // 16 → 256 bytes, growing each time
        #expect(Array(writer.bytes) == Array(repeating: Array(UInt8(0)..<16), count: 16).flatMap { $0 })
    }

    @Test func integersAtTheEdgesMatchSwift() {
        for value in [Int64.min, Int64.min + 1, -1, 0, 1, 9, 10, 99, 100, Int64.max] {
            var writer = ByteWriter(capacity: 2)
            JSONText.appendInt(value, to: &writer)
            #expect(String(decoding: writer.bytes, as: UTF8.self) == String(value))
        }
    }
}
