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
    public struct Ranges: Sendable {
        var lower = SIMD8<Int>()
        var upper = SIMD8<Int>()
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
            ranges.lower[number] = index
            index = try skipValue(line, from: index)
            ranges.upper[number] = index
        }
        guard index == line.count - 1, line[index] == 0x7D else {
            throw Malformed("not an envelope: more after \"source\" at byte \(index)")
        }
        return ranges
    }

    /// The end of the JSON value starting at `index` (the envelope is valid JSON: this finds
    /// boundaries, it does not validate).
    public static func skipValue(_ line: UnsafeBufferPointer<UInt8>, from start: Int) throws -> Int {
        var index = start
        var depth = 0
        var inString = false
        let base = line.baseAddress!
        while index < line.count {
            let byte = line[index]
            if inString {
                // Straight to the closing quote: most of a document is string text. A quote is
                // escaped when an odd number of backslashes comes right before it.
                var next = index
                while true {
                    guard next < line.count, let quote = memchr(base + next, 0x22, line.count - next) else {
                        throw Malformed("not an envelope: a string runs past the end of the line")
                    }
                    let at = base.distance(to: quote.assumingMemoryBound(to: UInt8.self))
                    var slashes = 0
                    while at - slashes - 1 >= index && base[at - slashes - 1] == 0x5C { slashes += 1 }
                    if slashes % 2 == 0 {
                        next = at
                        break
                    }
                    next = at + 1
                }
                index = next + 1
                inString = false
                if depth == 0 { return index }
                continue
            } else {
                switch byte {
                case 0x22: inString = true
                case 0x7B, 0x5B: depth += 1
                case 0x7D, 0x5D:
                    if depth == 0 { return index }
                    depth -= 1
                    if depth == 0 { return index + 1 }
                case 0x2C: if depth == 0 { return index }
                default: break
                }
            }
            index += 1
        }
        throw Malformed("not an envelope: a value runs past the end of the line")
    }

}
