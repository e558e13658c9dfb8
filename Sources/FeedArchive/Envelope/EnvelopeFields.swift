import Foundation

/// The record envelope's eight fields located in a line without parsing them: the byte range
/// of each value, in the fixed order (DESIGN.md "Record envelope"). For readers of blobs that
/// need the fields (Parquet, replay) at memory speed.
public enum EnvelopeFields {
    public struct Malformed: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    public static let keys = ["pos", "part", "op", "ts", "key", "after", "before", "source"]
    /// `,"<key>":` for every key (the first one's unused).
    static let separators: [[UInt8]] = keys.map { Array(",\"\($0)\":".utf8) }

    /// The byte ranges of the eight values of an envelope line (without its newline).
    public static func split(_ line: UnsafeBufferPointer<UInt8>) throws -> [Range<Int>] {
        let ranges = try locate(line)
        return (0..<8).map { ranges[$0] }
    }

    /// The eight ranges without an allocation, for once-per-change callers.
    public struct Ranges: Sendable, Equatable {
        @usableFromInline var lower = SIMD8<Int>()
        @usableFromInline var upper = SIMD8<Int>()
        @inlinable public init() {}
        public subscript(index: Int) -> Range<Int> { lower[index]..<upper[index] }
    }

    /// `split`, into `Ranges`.
    public static func locate(_ line: UnsafeBufferPointer<UInt8>) throws -> Ranges {
        var index = 0
        var ranges = Ranges()
        func expect(_ text: StaticString) throws {
            let count = text.utf8CodeUnitCount
            guard index + count <= line.count,
                memcmp(line.baseAddress! + index, text.utf8Start, count) == 0
            else { throw Malformed("not an envelope: expected \(text) at byte \(index)") }
            index += count
        }
        try expect("{\"pos\":")
        for (number, key) in keys.enumerated() {
            if number > 0 {
                let separator = separators[number]
                guard index + separator.count <= line.count,
                    memcmp(line.baseAddress! + index, separator, separator.count) == 0
                else { throw Malformed("not an envelope: expected \"\(key)\" at byte \(index)") }
                index += separator.count
            }
            // Lines are written without whitespace around values; an archive may hold lines
            // written before documents were trimmed, so whitespace is stepped over.
            while index < line.count && JSONText.isSpace(line[index]) { index += 1 }
            ranges.lower[number] = index
            index = try skipValue(line, from: index)
            var upper = index
            while upper > ranges.lower[number] && JSONText.isSpace(line[upper - 1]) { upper -= 1 }
            ranges.upper[number] = upper
            while index < line.count && JSONText.isSpace(line[index]) { index += 1 }
        }
        guard index == line.count - 1, line[index] == 0x7D else {
            throw Malformed("not an envelope: more after \"source\" at byte \(index)")
        }
        return ranges
    }

    /// The end of the JSON value starting at `index` (the envelope is valid JSON: this finds
    /// boundaries, it does not validate).
    public static func skipValue(_ line: UnsafeBufferPointer<UInt8>, from start: Int) throws -> Int {
        let count = line.count
        guard let base = line.baseAddress, start < count else {
            throw Malformed("not an envelope: a value runs past the end of the line")
        }
        var index = start
        var depth = 0
        while index < count {
            switch base[index] {
            case 0x22:
                index = try stringEnd(base, count, from: index + 1)
                if depth == 0 { return index }
                continue
            case 0x7B, 0x5B:
                depth += 1
            case 0x7D, 0x5D:
                if depth == 0 { return index }
                depth -= 1
                if depth == 0 { return index + 1 }
            case 0x2C:
                if depth == 0 { return index }
            default:
                break
            }
            index += 1
        }
        throw Malformed("not an envelope: a value runs past the end of the line")
    }

    /// The index after the quote that closes the string whose text starts at `index`. Eight
    /// bytes at a time: most of a document is string text, and most strings are short.
    @inline(__always)
    static func stringEnd(_ base: UnsafePointer<UInt8>, _ count: Int, from start: Int) throws -> Int {
        var index = start
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        while true {
            while index + 8 <= count {
                let word = UInt64(littleEndian: UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self))
                // A byte of the word is a quote or a backslash: its high bit in `found` (the
                // lowest such byte exactly; bytes above it may be flagged falsely).
                let quotes = word ^ (ones &* 0x22)
                let slashes = word ^ (ones &* 0x5C)
                let found = ((quotes &- ones) & ~quotes | (slashes &- ones) & ~slashes) & highs
                if found != 0 {
                    index += found.trailingZeroBitCount / 8
                    break
                }
                index += 8
            }
            while index < count && base[index] != 0x22 && base[index] != 0x5C { index += 1 }
            guard index < count else {
                throw Malformed("not an envelope: a string runs past the end of the line")
            }
            if base[index] == 0x22 { return index + 1 }
            index += 2  // an escape: the backslash and the character after it
        }
    }

}
