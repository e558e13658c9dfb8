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
    public static func appendString<Sink: ByteOutput & ~Copyable>(utf8: UnsafeBufferPointer<UInt8>, to out: inout Sink)
        -> Bool
    {
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
            if runStart < index - 1 {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<(index - 1)]))
            }
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
    public static func appendValue<Sink: ByteOutput & ~Copyable>(
        _ bytes: UnsafeBufferPointer<UInt8>, to out: inout Sink
    ) {
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
        if value == 0 {
            out.append(0x30)
            return
        }
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
        var scanner = JSONChecker(bytes: bytes)
        return scanner.document()
    }

    /// Checks `bytes` and, when it is exactly one JSON value, appends that value (without the
    /// whitespace around it, raw line breaks inside turned into spaces, as `appendValue`) and
    /// returns true; otherwise appends nothing. One pass of checking, then a plain copy: the
    /// hot path of every source.
    @inlinable
    ///
    /// `keepingSpace` keeps the whitespace, as lines were written before values were trimmed (for
    /// comparing with such a line).
    public static func appendIfValid<Sink: ByteOutput & ~Copyable>(
        _ bytes: UnsafeBufferPointer<UInt8>, to out: inout Sink, keepingSpace: Bool = false
    ) -> Bool {
        let (valid, sawLineBreak) = check(bytes)
        guard valid else { return false }
        if keepingSpace {
            if sawLineBreak { appendValue(bytes, to: &out) } else { out.append(contentsOf: bytes) }
            return true
        }
        // A value's fields are found by their bounds (`EnvelopeFields`): the value starts and
        // ends the field, as a document written with a trailing newline would not.
        var (start, end) = (0, bytes.count)
        while start < end && isSpace(bytes[start]) { start += 1 }
        while end > start && isSpace(bytes[end - 1]) { end -= 1 }
        let bytes = UnsafeBufferPointer(rebasing: bytes[start..<end])
        if sawLineBreak {
            appendValue(bytes, to: &out)
        } else {
            out.append(contentsOf: bytes)
        }
        return true
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    @inlinable @inline(__always)
    public static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    /// Whether `bytes` is one JSON value, and whether a raw line break occurs in it.
    @usableFromInline
    static func check(_ bytes: UnsafeBufferPointer<UInt8>) -> (valid: Bool, sawLineBreak: Bool) {
        var scanner = JSONChecker(bytes: bytes)
        return (scanner.document(), scanner.sawLineBreak)
    }

    @inlinable
    public static func appendIfValid<Sink: ByteOutput & ~Copyable>(
        _ bytes: ArraySlice<UInt8>, to out: inout Sink, keepingSpace: Bool = false
    ) -> Bool {
        bytes.withUnsafeBufferPointer { appendIfValid($0, to: &out, keepingSpace: keepingSpace) }
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
    public static func skipPlainWords(_ base: UnsafePointer<UInt8>, from index: Int, end: Int, controlAndNonASCII: Bool)
        -> Int
    {
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
