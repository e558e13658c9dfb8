/// Byte-level JSON: the envelope is written straight into a byte buffer (no per-record
/// encoder round trip), and documents that are already JSON text are checked, then copied.
public enum JSONText {
    /// Appends `text` as a JSON string literal.
    @inlinable
    public static func appendString<Sink: ByteOutput & ~Copyable>(_ text: String, to out: inout Sink) {
        var text = text
        _ = text.withUTF8 { appendString(utf8: $0, to: &out) }
    }

    /// Appends UTF-8 bytes as a JSON string literal, escaping what JSON requires.
    /// Returns whether every byte was ASCII, which the same pass finds out (a caller that must
    /// check UTF-8 only needs to for the rest).
    @inlinable @discardableResult
    public static func appendString<Sink: ByteOutput & ~Copyable>(utf8: UnsafeBufferPointer<UInt8>, to out: inout Sink) -> Bool {
        out.append(0x22)
        var runStart = 0
        var index = 0
        var seen: UInt64 = 0
        let count = utf8.count
        let raw = UnsafeRawBufferPointer(utf8)
        while index < count {
            // Eight bytes at a time while none of them needs escaping (most text).
            if index + 8 <= count {
                let word = raw.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                if !needsEscape(word) {
                    seen |= word
                    index += 8
                    continue
                }
            }
            let byte = utf8[index]
            seen |= UInt64(byte)
            index += 1
            if byte >= 0x20 && byte != 0x22 && byte != 0x5C { continue }
            if runStart < index - 1 { out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<(index - 1)])) }
            runStart = index
            appendEscape(byte, to: &out)
        }
        if runStart < count { out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<count])) }
        out.append(0x22)
        return seen & 0x8080_8080_8080_8080 == 0
    }

    /// Whether any of eight bytes is a control character, `"` or `\` (SWAR: a byte below n
    /// shows as `(x - n) & ~x & 0x80` per lane, exact for n <= 0x80 as a whole-word test).
    @inlinable @inline(__always)
    static func needsEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let control = (word &- ones &* 0x20) & ~word & highs
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let zeroQuote = (quote &- ones) & ~quote & highs
        let zeroBackslash = (backslash &- ones) & ~backslash & highs
        return control | zeroQuote | zeroBackslash != 0
    }

    @usableFromInline
    static func appendEscape<Sink: ByteOutput & ~Copyable>(_ byte: UInt8, to out: inout Sink) {
        out.append(0x5C)
        switch byte {
        case 0x22: out.append(0x22)
        case 0x5C: out.append(0x5C)
        case 0x0A: out.append(0x6E)
        case 0x0D: out.append(0x72)
        case 0x09: out.append(0x74)
        default:  // \u00XX
            out.append(0x75)
            out.append(0x30)
            out.append(0x30)
            out.append(hexDigit(byte >> 4))
            out.append(hexDigit(byte & 0xF))
        }
    }

    @inlinable @inline(__always)
    static func hexDigit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? 0x30 + nibble : 0x57 + nibble }

    /// Appends JSON text that passed `isValid`, turning raw line breaks into spaces: in valid
    /// JSON they can only be whitespace between tokens, and a pretty-printed document must not
    /// break its envelope across lines.
    @inlinable
    public static func appendValue<Sink: ByteOutput & ~Copyable>(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout Sink) {
        var runStart = 0
        for index in bytes.indices where bytes[index] == 0x0A || bytes[index] == 0x0D {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
            out.append(0x20)
            runStart = index + 1
        }
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
    }

    @inlinable
    public static func appendValue<Sink: ByteOutput & ~Copyable>(_ bytes: ArraySlice<UInt8>, to out: inout Sink) {
        bytes.withUnsafeBufferPointer { appendValue($0, to: &out) }
    }

    /// Appends a decimal integer.
    @inlinable
    public static func appendInt<Sink: ByteOutput & ~Copyable>(_ value: Int64, to out: inout Sink) {
        if value == 0 { out.append(0x30); return }
        var magnitude = value.magnitude
        if value < 0 { out.append(0x2D) }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: Int64 has at most 19 digits
        withUnsafeMutableBytes(of: &digits) { buffer in
            var start = buffer.count
            while magnitude > 0 {
                start -= 1
                buffer[start] = UInt8(magnitude % 10) + 0x30
                magnitude /= 10
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[start...]))
        }
    }

    /// True when `bytes` is exactly one JSON value (surrounding whitespace allowed) in valid UTF-8.
    public static func isValid(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var scanner = JSONScanner(bytes: bytes)
        return scanner.document()
    }

    /// Checks `bytes` and, when it is exactly one JSON value, appends it (raw line breaks
    /// turned into spaces, as `appendValue`) and returns true; otherwise appends nothing.
    /// One pass of checking, then a plain copy: the hot path of every source.
    @inlinable
    public static func appendIfValid<Sink: ByteOutput & ~Copyable>(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout Sink) -> Bool {
        let (valid, sawLineBreak) = check(bytes)
        guard valid else { return false }
        if sawLineBreak {
            appendValue(bytes, to: &out)
        } else {
            out.append(contentsOf: bytes)
        }
        return true
    }

    /// Whether `bytes` is one JSON value, and whether a raw line break occurs in it.
    @usableFromInline
    static func check(_ bytes: UnsafeBufferPointer<UInt8>) -> (valid: Bool, sawLineBreak: Bool) {
        var scanner = JSONScanner(bytes: bytes)
        return (scanner.document(), scanner.sawLineBreak)
    }

    @inlinable
    public static func appendIfValid<Sink: ByteOutput & ~Copyable>(_ bytes: ArraySlice<UInt8>, to out: inout Sink) -> Bool {
        bytes.withUnsafeBufferPointer { appendIfValid($0, to: &out) }
    }

    public static func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { isValid($0) }
    }

    public static func isValid(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.withUnsafeBufferPointer { isValid($0) }
    }

    /// Moves from `index` over whole 8-byte words that hold no quote or backslash (nor, with
    /// `controlAndNonASCII`, a byte below 0x20 or above 0x7F), SWAR on one 64-bit word at a
    /// time. Returns the index of the first such byte, or where fewer than 8 bytes are left:
    /// string scanners finish byte by byte from there.
    @inline(__always)
    public static func skipPlainWords(_ base: UnsafePointer<UInt8>, from index: Int, end: Int, controlAndNonASCII: Bool) -> Int {
        var index = index
        let ones: UInt64 = 0x0101_0101_0101_0101
        let high: UInt64 = 0x8080_8080_8080_8080
        while index + 8 <= end {
            let word = UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
            let quote = word ^ (0x22 &* ones)
            let backslash = word ^ (0x5C &* ones)
            var special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash)
            if controlAndNonASCII { special |= word | ((word &- 0x20 &* ones) & ~word) }
            special &= high
            if special != 0 {
                // Straight to the first flagged byte (little-endian: the lowest one; the borrow
                // in the subtractions only runs upwards, so it is never a false one).
                #if _endian(little)
                index += special.trailingZeroBitCount >> 3
                #endif
                return index
            }
            index += 8
        }
        return index
    }

    /// Appends a literal's bytes without going through String.
    @inlinable @inline(__always)
    public static func appendLiteral<Sink: ByteOutput & ~Copyable>(_ literal: StaticString, to out: inout Sink) {
        out.append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }
}

/// A recursive-descent JSON checker over bytes; depth is capped so hostile input cannot
/// exhaust the stack.
struct JSONScanner {
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
        if current == 0x7D { index += 1; return true }
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
            case 0x7D: index += 1; return true
            default: return false
            }
        }
    }

    mutating func array(depth: Int) -> Bool {
        index += 1
        skipSpace()
        if current == 0x5D { index += 1; return true }
        while true {
            skipSpace()
            guard value(depth: depth + 1) else { return false }
            skipSpace()
            switch current {
            case 0x2C: index += 1
            case 0x5D: index += 1; return true
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
            if byte == 0x22 { index += 1; return true }
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
        case 0xE0: length = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
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
        while let byte = current, byte >= 0x30 && byte <= 0x39 { index += 1; count += 1 }
        return count
    }
}

/// The envelope lines of one page, written into chunks below glibc's mmap threshold (512 KiB,
/// set by the executable). A chunk freed after its page is compressed is reused for a later
/// page; one buffer for a whole page (about 1 MB) was a fresh mapping each time, and its page
/// faults and zeroing cost up to a tenth of a run's CPU. Lines are slices of their chunk, taken
/// once the chunk is full (a slice taken earlier would make the next append copy the chunk).
public struct LineChunks {
    public static let chunkBytes = 384 << 10
    /// The chunk being written: write a line's bytes here between `startLine` and `endLine`.
    public var out: [UInt8] = []
    private var pending: [Range<Int>] = []
    private var lines: [ArraySlice<UInt8>] = []

    public init(expectedLines: Int = 0) {
        out.reserveCapacity(Self.chunkBytes + (64 << 10))
        lines.reserveCapacity(expectedLines)
    }

    /// Where the next line starts (in a fresh chunk when this one is full).
    @inline(__always)
    public mutating func startLine() -> Int {
        if out.count >= Self.chunkBytes { seal() }
        return out.count
    }

    @inline(__always)
    public mutating func endLine(_ start: Int) { pending.append(start..<out.count) }

    /// The lines written, in order.
    public mutating func finish() -> [ArraySlice<UInt8>] {
        seal(startingAnother: false)
        return lines
    }

    private mutating func seal(startingAnother: Bool = true) {
        for range in pending { lines.append(out[range]) }
        pending.removeAll(keepingCapacity: true)
        out = []
        if startingAnother { out.reserveCapacity(Self.chunkBytes + (64 << 10)) }
    }
}
