import FeedArchive
import Foundation

/// Just enough JSON scanning for change feed bodies: values are skipped by structure, strings
/// decoded only where a field is needed. Errors say where the body went wrong. The bytes must
/// outlive the scanner (it is made inside `withUnsafeBufferPointer`).
struct ChangeFeedScanner {
    let bytes: UnsafeBufferPointer<UInt8>

    struct Member {
        var key: Range<Int>  // inside the quotes
        var value: Range<Int>
    }

    func failure(_ message: String) -> FeedArchiveError {
        .sourceUnavailable("the change feed answer is not what the protocol describes: \(message)")
    }

    @inline(__always) func skipSpace(_ index: inout Int, _ end: Int) {
        while index < end, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09
        { index += 1 }
    }

    /// Moves past one value starting at `index` (after spaces); returns its range.
    func value(_ index: inout Int, _ end: Int) throws -> Range<Int> {
        skipSpace(&index, end)
        let start = index
        guard index < end else { throw failure("a value is missing at byte \(index)") }
        switch bytes[index] {
        case 0x22:
            try string(&index, end)
        case 0x7B, 0x5B:
            var depth = 0
            while index < end {
                switch bytes[index] {
                case 0x22:
                    try string(&index, end)
                    continue
                case 0x7B, 0x5B: depth += 1
                case 0x7D, 0x5D:
                    depth -= 1
                    if depth == 0 {
                        index += 1
                        return start..<index
                    }
                default: break
                }
                index += 1
            }
            throw failure("an object or array is not closed (byte \(start))")
        default:
            while index < end,
                !(bytes[index] == 0x2C || bytes[index] == 0x7D || bytes[index] == 0x5D || bytes[index] == 0x20
                    || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09)
            {
                index += 1
            }
            guard index > start else { throw failure("unexpected byte at \(start)") }
        }
        return start..<index
    }

    /// Moves past a string starting at its opening quote: eight bytes at a time until a quote
    /// or a backslash (SWAR), escapes skipped. Checking the string's content is not done here
    /// (documents are checked by `JSONText.appendIfValid` when copied).
    func string(_ index: inout Int, _ end: Int) throws {
        index += 1
        let base = bytes.baseAddress!
        while index < end {
            index = JSONText.skipPlainWords(base, from: index, end: end, controlAndNonASCII: false)
            guard index < end else { break }
            switch base[index] {
            case 0x5C: index += 2
            case 0x22:
                index += 1
                return
            default: index += 1
            }
        }
        throw failure("a string is not closed")
    }

    /// The members of the object at `index` (after spaces) into `result`, moving past it;
    /// false (index unmoved) when the value there is not an object.
    func members(at index: inout Int, _ end: Int, into result: inout [Member]) throws -> Bool {
        result.removeAll(keepingCapacity: true)
        guard index < end, bytes[index] == 0x7B else { return false }
        index += 1
        skipSpace(&index, end)
        if index < end, bytes[index] == 0x7D {
            index += 1
            return true
        }
        while index < end {
            skipSpace(&index, end)
            guard index < end, bytes[index] == 0x22 else { throw failure("an object key is missing at byte \(index)") }
            let keyStart = index + 1
            try string(&index, end)
            let key = keyStart..<(index - 1)
            skipSpace(&index, end)
            guard index < end, bytes[index] == 0x3A else { throw failure("':' is missing at byte \(index)") }
            index += 1
            let value = try value(&index, end)
            result.append(Member(key: key, value: value))
            skipSpace(&index, end)
            guard index < end else { break }
            if bytes[index] == 0x2C {
                index += 1
                continue
            }
            if bytes[index] == 0x7D {
                index += 1
                return true
            }
            throw failure("',' or '}' expected at byte \(index)")
        }
        throw failure("an object is not closed")
    }

    /// The members of the object in `range`; nil when it is not an object.
    func members(of range: Range<Int>) throws -> [Member]? {
        var index = range.lowerBound
        skipSpace(&index, range.upperBound)
        var result: [Member] = []
        return try members(at: &index, range.upperBound, into: &result) ? result : nil
    }

    func keyEquals(_ key: Range<Int>, _ name: StaticString) -> Bool {
        guard key.count == name.utf8CodeUnitCount else { return false }
        return memcmp(bytes.baseAddress! + key.lowerBound, name.utf8Start, key.count) == 0
    }

    func member(_ members: [Member], _ name: StaticString) -> Range<Int>? {
        members.first { keyEquals($0.key, name) }?.value
    }

    /// A member found by a decoded key (partition key paths can hold any character).
    func member(_ members: [Member], named name: String) -> Range<Int>? {
        let wanted = Array(name.utf8)
        return members.first { member in
            if bytes[member.key].elementsEqual(wanted) { return true }
            return bytes[member.key].contains(0x5C)
                && decodeString(member.key.lowerBound - 1..<member.key.upperBound + 1) == name
        }?.value
    }

    /// An integer value (`_lsn`, `_ts`, `lsn`, `crts`).
    func integer(_ range: Range<Int>?) -> Int64? {
        guard let range, !range.isEmpty else { return nil }
        var value: Int64 = 0
        var negative = false
        for offset in range {
            let byte = bytes[offset]
            if offset == range.lowerBound && byte == 0x2D {
                negative = true
                continue
            }
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(byte - 0x30))
            if overflow1 || overflow2 { return nil }
            value = sum
        }
        return negative ? -value : value
    }

    /// A string value decoded (escapes included); nil when the value is not a string.
    func decodeString(_ range: Range<Int>?) -> String? {
        guard let range, range.count >= 2, bytes[range.lowerBound] == 0x22 else { return nil }
        let inner = UnsafeBufferPointer(rebasing: bytes[(range.lowerBound + 1)..<(range.upperBound - 1)])
        if !inner.contains(0x5C) { return String(decoding: inner, as: UTF8.self) }
        // Rare: let Foundation decode the escapes of this one string.
        return (try? JSONDecoder().decode(String.self, from: Data(UnsafeBufferPointer(rebasing: bytes[range]))))
    }

    func isNull(_ range: Range<Int>?) -> Bool {
        guard let range else { return true }
        return bytes[range].elementsEqual("null".utf8)
    }
}
