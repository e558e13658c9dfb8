import Crypto
import Foundation

/// RFC 3339 UTC text for microseconds since the epoch: `2026-11-23T03:25:00Z`, with a
/// fraction only when it is not zero. Deterministic, no locale, no Foundation formatter.
public func formatRFC3339(microseconds: Int64) -> String {
    var out: [UInt8] = []
    appendRFC3339(microseconds: microseconds, to: &out)
    return String(decoding: out, as: UTF8.self)
}

/// Appends the RFC 3339 form of `microseconds` as JSON-safe ASCII (years outside 0...9999, which
/// RFC 3339 cannot write, in ISO 8601's expanded form: `10000-01-01T00:00:00Z`, `-0044-03-15…`).
public func appendRFC3339(microseconds: Int64, to out: inout [UInt8]) {
    let (seconds, micros) = microseconds.quotientAndRemainder(dividingBy: 1_000_000)
    let totalSeconds = micros < 0 ? seconds - 1 : seconds
    let fraction = micros < 0 ? micros + 1_000_000 : micros
    let (days, secondOfDay) = floorDivide(totalSeconds, 86_400)
    let (year, month, day) = civilFromDays(days)
    // Every source's records carry one or more of these: the text is built on the stack, two
    // digits at a time, and appended at once.
    var text = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))  // 40 bytes: the longest is 30
    withUnsafeMutableBytes(of: &text) { buffer in
        var count = 0
        func two(_ value: Int64) {
            buffer[count] = UInt8(truncatingIfNeeded: value / 10) &+ 0x30
            buffer[count + 1] = UInt8(truncatingIfNeeded: value % 10) &+ 0x30
            count += 2
        }
        func mark(_ byte: UInt8) {
            buffer[count] = byte
            count += 1
        }
        func digits(_ value: Int64, width: Int) {  // zero-padded to `width`, wider when needed
            var length = 1
            var rest = value / 10
            while rest > 0 {
                length += 1
                rest /= 10
            }
            length = max(length, width)
            rest = value
            for place in stride(from: count + length - 1, through: count, by: -1) {
                buffer[place] = UInt8(truncatingIfNeeded: rest % 10) &+ 0x30
                rest /= 10
            }
            count += length
        }
        if (0...9999).contains(year) {
            two(year / 100)
            two(year % 100)
        } else {  // outside RFC 3339's four digits (Int64 microseconds reach ±292,277): ISO 8601's expanded form
            if year < 0 { mark(0x2D) }
            digits(Int64(year.magnitude), width: 4)
        }
        mark(0x2D)
        two(month)
        mark(0x2D)
        two(day)
        mark(0x54)
        two(secondOfDay / 3600)
        mark(0x3A)
        two(secondOfDay / 60 % 60)
        mark(0x3A)
        two(secondOfDay % 60)
        if fraction != 0 {
            mark(0x2E)
            var width = 6
            var trimmed = fraction
            while trimmed % 10 == 0 {
                trimmed /= 10
                width -= 1
            }
            digits(trimmed, width: width)
        }
        mark(0x5A)
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }
}

func floorDivide(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
    let (q, r) = value.quotientAndRemainder(dividingBy: divisor)
    return r < 0 ? (q - 1, r + divisor) : (q, r)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
func civilFromDays(_ days: Int64) -> (Int64, Int64, Int64) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
}

/// Date to days since 1970-01-01.
func daysFromCivil(_ year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|±HH:MM]` (no zone means UTC) into microseconds.
public func parseTimestampMicros(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
    var index = 0
    func number(_ width: Int) -> Int64? {
        guard index + width <= bytes.count else { return nil }
        var value: Int64 = 0
        for _ in 0..<width {
            let byte = bytes[index]
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            value = value * 10 + Int64(byte - 0x30)
            index += 1
        }
        return value
    }
    func expect(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }
    guard let year = number(4), expect(0x2D), let month = number(2), expect(0x2D), let day = number(2),
        (1...12).contains(month), (1...31).contains(day)
    else { return nil }
    var micros = daysFromCivil(year, month, day) * 86_400_000_000
    if index == bytes.count { return micros }
    guard index < bytes.count, bytes[index] == 0x54 || bytes[index] == 0x74 || bytes[index] == 0x20 else { return nil }
    index += 1
    guard let hour = number(2), expect(0x3A), let minute = number(2), expect(0x3A), let second = number(2),
        hour < 24, minute < 60, second <= 60
    else { return nil }
    micros += ((hour * 60 + minute) * 60 + second) * 1_000_000
    if index < bytes.count && bytes[index] == 0x2E {
        index += 1
        var scale: Int64 = 100_000
        var digits = 0
        while index < bytes.count, bytes[index] >= 0x30 && bytes[index] <= 0x39 {
            if scale > 0 {
                micros += Int64(bytes[index] - 0x30) * scale
                scale /= 10
            }
            index += 1
            digits += 1
        }
        guard digits > 0 else { return nil }
    }
    if index == bytes.count { return micros }
    if bytes[index] == 0x5A || bytes[index] == 0x7A {
        index += 1
        return index == bytes.count ? micros : nil
    }
    guard bytes[index] == 0x2B || bytes[index] == 0x2D else { return nil }
    let sign: Int64 = bytes[index] == 0x2D ? -1 : 1
    index += 1
    guard let offsetHours = number(2) else { return nil }
    _ = expect(0x3A)
    guard let offsetMinutes = number(2), index == bytes.count else { return nil }
    return micros - sign * (offsetHours * 60 + offsetMinutes) * 60_000_000
}

/// Parses an RFC 3339 time (the CLI's `--from 2026-11-23T00:00:00Z`).
public func parseRFC3339(_ text: String) -> Date? {
    var text = text
    guard text.utf8.count >= 10, text.utf8.first.map({ $0 >= 0x30 && $0 <= 0x39 }) == true else { return nil }
    return text.withUTF8 { parseTimestampMicros($0) }.map { Date(timeIntervalSince1970: Double($0) / 1_000_000) }
}

/// Lower-case hex SHA-256 of `bytes`.
public func sha256Hex(_ bytes: some DataProtocol) -> String {
    hexString(SHA256.hash(data: bytes))
}

public func hexString(_ digest: some Sequence<UInt8>) -> String {
    let hex = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in digest {
        out.append(hex[Int(byte >> 4)])
        out.append(hex[Int(byte & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}
