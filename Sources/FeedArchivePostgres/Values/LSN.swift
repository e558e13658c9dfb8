import FeedArchive
import Foundation

/// A PostgreSQL LSN: 64 bits, printed `X/Y` in hex.
public struct LSN: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }

    /// Parses `16/B374D848`.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
            let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        value = high << 32 | low
    }

    public var description: String {
        var text = (UInt64(0), UInt64(0), UInt64(0))  // 24 bytes: room for `XXXXXXXX/XXXXXXXX`, no heap
        return withUnsafeMutableBytes(of: &text) { buffer in
            var count = 0
            Self.appendHex(UInt32(truncatingIfNeeded: value >> 32)) {
                buffer[count] = $0
                count += 1
            }
            buffer[count] = UInt8(ascii: "/")
            count += 1
            Self.appendHex(UInt32(truncatingIfNeeded: value)) {
                buffer[count] = $0
                count += 1
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<count]), as: UTF8.self)
        }
    }
    /// 16 hex digits: the fixed-width form positions use, whose byte order is LSN order.
    public var fixedWidth: String {
        var bytes: [UInt8] = []
        appendFixedWidth(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// An upper-case hex digit for 0...15.
    @inline(__always) private static func hexDigit(_ value: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: value < 10 ? 0x30 + value : 0x37 + value)
    }

    /// `X/Y` (upper-case hex, no leading zeros), as PostgreSQL prints an LSN.
    func appendText<Sink: ByteOutput & ~Copyable>(to out: inout Sink) {
        Self.appendHex(UInt32(truncatingIfNeeded: value >> 32)) { out.append($0) }
        out.append(UInt8(ascii: "/"))
        Self.appendHex(UInt32(truncatingIfNeeded: value)) { out.append($0) }
    }

    func appendFixedWidth<Sink: ByteOutput & ~Copyable>(to out: inout Sink) {
        for shift in stride(from: 60, through: 0, by: -4) { out.append(Self.hexDigit((value >> UInt64(shift)) & 0xF)) }
    }

    /// `number` in upper-case hex without leading zeros, a digit at a time to `put`.
    @inline(__always) private static func appendHex(_ number: UInt32, _ put: (UInt8) -> Void) {
        var shift: UInt32 = 28
        while shift > 0 && (number >> shift) & 0xF == 0 { shift -= 4 }
        while true {
            put(hexDigit(UInt64((number >> shift) & 0xF)))
            if shift == 0 { break }
            shift -= 4
        }
    }
    public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.value < rhs.value }
}
