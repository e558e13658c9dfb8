/// A change's place in its partition: a fixed-width string whose byte order is feed order.
public struct Position: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The text form used in envelopes, blob names and manifest lines.
    public let rawValue: String

    /// Accepts the characters positions are made of (digits, letters, `-`), so a position
    /// can always be used in a file name.
    public init?(_ rawValue: String) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= 64, rawValue.utf8.allSatisfy(Self.allows) else { return nil }
        self.rawValue = rawValue
    }

    /// A sequence number as 20 decimal digits (SQLite).
    public static func sequence(_ value: Int64) -> Position {
        var digits = (UInt64(0), UInt64(0), UInt64(0))  // 24 bytes: room for 20 digits, no heap
        var rest = UInt64(max(0, value))
        let text = withUnsafeMutableBytes(of: &digits) { buffer -> String in
            for index in stride(from: 19, through: 0, by: -1) {
                buffer[index] = UInt8(rest % 10) + 0x30
                rest /= 10
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<20]), as: UTF8.self)
        }
        return Position(unchecked: text)
    }

    /// `major` and `minor` in fixed-width decimal joined by `-` (Cosmos: `_lsn` in 20 digits
    /// and the index among its items in 8), built in one go for the hot path.
    public static func pair(_ major: UInt64, width majorWidth: Int, _ minor: UInt64, width minorWidth: Int) -> Position
    {
        precondition(majorWidth + minorWidth < 63)
        var text: [UInt8] = []
        text.reserveCapacity(majorWidth + minorWidth + 1)
        appendZeroPadded(major, width: majorWidth, to: &text)
        text.append(0x2D)
        appendZeroPadded(minor, width: minorWidth, to: &text)
        return Position(unchecked: String(decoding: text, as: UTF8.self))
    }

    init(unchecked: String) { self.rawValue = unchecked }

    /// The bytes a position is made of: digits, ASCII letters and `-`.
    @inline(__always)
    static func allows(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            || byte == 0x2D
    }

    /// A position from its UTF-8 bytes (a source's hot path: the bytes are checked in one
    /// tight loop, without going through String's views).
    public init?(utf8 bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty, bytes.count <= 64 else { return nil }
        for byte in bytes where !Self.allows(byte) { return nil }
        self.rawValue = String(decoding: bytes, as: UTF8.self)
    }

    public static func < (lhs: Position, rhs: Position) -> Bool {
        lhs.rawValue.utf8.lexicographicallyPrecedes(rhs.rawValue.utf8)
    }

    public var description: String { rawValue }
}

/// `value` in decimal, left-padded with zeros to `width` digits.
public func zeroPadded(_ value: UInt64, width: Int) -> String {
    let digits = String(value)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}

/// Appends `value` in decimal, left-padded with zeros to `width` digits (more when it needs more).
public func appendZeroPadded(_ value: UInt64, width: Int, to out: inout [UInt8]) {
    var digits = 1
    var limit: UInt64 = 10
    while digits < 20 && value >= limit {
        digits += 1
        limit = limit.multipliedReportingOverflow(by: 10).partialValue
    }
    let count = max(width, digits)
    let start = out.count
    out.append(contentsOf: repeatElement(0x30, count: count))
    var rest = value
    var index = start + count - 1
    while rest > 0 {
        out[index] = UInt8(rest % 10) + 0x30
        rest /= 10
        index -= 1
    }
}
