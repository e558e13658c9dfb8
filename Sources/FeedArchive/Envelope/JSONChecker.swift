/// A recursive-descent JSON checker over bytes; depth is capped so hostile input cannot
/// exhaust the stack.
struct JSONChecker {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    static let maxDepth = 512

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    @inline(__always) var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    /// A raw line break was skipped as whitespace (the only place valid JSON can hold one).
    var sawLineBreak = false

    /// Exactly one value, surrounding whitespace allowed.
    mutating func document() -> Bool {
        skipSpace()
        guard value(depth: 0) else { return false }
        skipSpace()
        return index == bytes.count
    }

    @inline(__always) mutating func skipSpace() {
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x20 || byte == 0x09 {
                index += 1
            } else if byte == 0x0A || byte == 0x0D {
                sawLineBreak = true
                index += 1
            } else {
                return
            }
        }
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
        index += count
        return true
    }

    mutating func value(depth: Int) -> Bool {
        guard depth < Self.maxDepth, let byte = current else { return false }
        switch byte {
        case 0x7B: return object(depth: depth)
        case 0x5B: return array(depth: depth)
        case 0x22: return string()
        case 0x74: return literal("true")
        case 0x66: return literal("false")
        case 0x6E: return literal("null")
        default: return number()
        }
    }

    mutating func object(depth: Int) -> Bool {
        index += 1
        skipSpace()
        if current == 0x7D {
            index += 1
            return true
        }
        while true {
            skipSpace()
            guard current == 0x22, string() else { return false }
            skipSpace()
            guard current == 0x3A else { return false }
            index += 1
            skipSpace()
            guard value(depth: depth + 1) else { return false }
            skipSpace()
            switch current {
            case 0x2C: index += 1
            case 0x7D:
                index += 1
                return true
            default: return false
            }
        }
    }

    mutating func array(depth: Int) -> Bool {
        index += 1
        skipSpace()
        if current == 0x5D {
            index += 1
            return true
        }
        while true {
            skipSpace()
            guard value(depth: depth + 1) else { return false }
            skipSpace()
            switch current {
            case 0x2C: index += 1
            case 0x5D:
                index += 1
                return true
            default: return false
            }
        }
    }

    mutating func string() -> Bool {
        index += 1
        let base = bytes.baseAddress!
        let count = bytes.count
        while index < count {
            // Fastest path: eight bytes at a time while none is a quote, a backslash, a
            // control character or non-ASCII.
            index = JSONText.skipPlainWords(base, from: index, end: count, controlAndNonASCII: true)
            guard index < count else { break }
            // Fast path: plain printable ASCII, the bulk of any document.
            let byte = base[index]
            if byte >= 0x20 && byte < 0x80 && byte != 0x22 && byte != 0x5C {
                index += 1
                continue
            }
            if byte == 0x22 {
                index += 1
                return true
            }
            if byte < 0x20 { return false }
            if byte == 0x5C {
                index += 1
                guard let escaped = current else { return false }
                switch escaped {
                case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74: index += 1
                case 0x75:
                    guard index + 4 < bytes.count else { return false }
                    for offset in 1...4 where !isHex(bytes[index + offset]) { return false }
                    index += 5
                default: return false
                }
            } else if byte < 0x80 {
                index += 1
            } else if !utf8Sequence() {
                return false
            }
        }
        return false
    }

    @inline(__always) func isHex(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
    }

    /// One multi-byte UTF-8 sequence starting at `index` (RFC 3629: no overlongs, no surrogates).
    mutating func utf8Sequence() -> Bool {
        let lead = bytes[index]
        let length: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            high = 0x9F
        case 0xF0:
            length = 4
            low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            high = 0x8F
        default: return false
        }
        guard index + length <= bytes.count else { return false }
        let second = bytes[index + 1]
        guard second >= low && second <= high else { return false }
        for offset in 2..<length where bytes[index + offset] & 0xC0 != 0x80 { return false }
        index += length
        return true
    }

    mutating func number() -> Bool {
        let start = index
        if current == 0x2D { index += 1 }
        guard let first = current, first >= 0x30 && first <= 0x39 else { return false }
        index += 1
        if first != 0x30 { digits() }
        if current == 0x2E {
            index += 1
            guard digits() > 0 else { return false }
        }
        if current == 0x65 || current == 0x45 {
            index += 1
            if current == 0x2B || current == 0x2D { index += 1 }
            guard digits() > 0 else { return false }
        }
        return index > start
    }

    @discardableResult mutating func digits() -> Int {
        var count = 0
        while let byte = current, byte >= 0x30 && byte <= 0x39 {
            index += 1
            count += 1
        }
        return count
    }
}
