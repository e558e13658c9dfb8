import FeedArchive
import Foundation

/// Column values, as pgoutput sends them (PostgreSQL's text output, with the reading session
/// set to `TimeZone=UTC`, `DateStyle=ISO`, `bytea_output=hex`), turned into JSON by type OID.
enum PGValue {
    enum Kind: Sendable {
        case number, float, bool, json, bytea, timestamp, timestamptz, string
    }

    /// The element type of the array types this encoder knows.
    static let arrayElements: [UInt32: UInt32] = [
        1000: 16, 1005: 21, 1007: 23, 1016: 20, 1028: 26, 1021: 700, 1022: 701, 1231: 1700,
        1009: 25, 1015: 1043, 1014: 1042, 199: 114, 3807: 3802, 1001: 17, 1182: 1082,
        1115: 1114, 1185: 1184, 1183: 1083, 2951: 2950, 1187: 1186, 1041: 869,
    ]

    static func kind(of oid: UInt32) -> Kind {
        switch oid {
        case 20, 21, 23, 26: .number  // int8, int2, int4, oid
        case 700, 701: .float
        case 16: .bool
        case 114, 3802: .json
        case 17: .bytea
        case 1114: .timestamp
        case 1184: .timestamptz
        default: .string  // numeric (exact, as a string), text, dates, uuid, enums, …
        }
    }

    /// How a column's values become JSON: a scalar of a kind, or an array of an element type.
    enum Encoding: Sendable {
        case scalar(Kind)
        case array(element: UInt32)
    }

    static func encoding(of typeOID: UInt32) -> Encoding {
        if let element = arrayElements[typeOID] { return .array(element: element) }
        return .scalar(kind(of: typeOID))
    }

    static func appendJSON<Sink: ByteOutput & ~Copyable>(
        text: UnsafeRawBufferPointer, typeOID: UInt32, to out: inout Sink
    ) {
        appendJSON(text: text, encoding: encoding(of: typeOID), to: &out)
    }

    static func appendJSON<Sink: ByteOutput & ~Copyable>(
        text: UnsafeRawBufferPointer, encoding: Encoding, to out: inout Sink
    ) {
        switch encoding {
        case .array(let element): appendArray(text: text, elementOID: element, to: &out)
        case .scalar(let kind): appendScalar(text: text, kind: kind, to: &out)
        }
    }

    static func appendScalar<Sink: ByteOutput & ~Copyable>(text: UnsafeRawBufferPointer, kind: Kind, to out: inout Sink)
    {
        let bytes = text.bindMemory(to: UInt8.self)
        switch kind {
        case .number, .float:
            // An integer as PostgreSQL prints it (the common case) is a JSON number as it is.
            if kind == .number, isPlainInteger(bytes) {
                out.append(contentsOf: bytes)
                return
            }
            // NaN and the infinities have no JSON number: they (and anything else that is not
            // a JSON number) stay strings.
            if let first = bytes.first,
                first == UInt8(ascii: "-") || (first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")),
                JSONText.isValid(bytes)
            {
                out.append(contentsOf: bytes)
            } else {
                appendString(bytes, to: &out)
            }
        case .bool:
            JSONText.appendLiteral(bytes.first == UInt8(ascii: "t") ? "true" : "false", to: &out)
        case .json:
            if !JSONText.appendIfValid(bytes, to: &out) { appendString(bytes, to: &out) }
        case .bytea:
            appendBase64(hexBytea: bytes, to: &out)
        case .timestamp:
            appendTimestamp(bytes, zoned: false, to: &out)
        case .timestamptz:
            appendTimestamp(bytes, zoned: true, to: &out)
        case .string:
            appendString(bytes, to: &out)
        }
    }

    /// `0`, or an optional `-` and digits without a leading zero: a JSON number as it stands.
    @inline(__always)
    static func isPlainInteger(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = bytes.first == UInt8(ascii: "-") ? 1 : 0
        guard index < bytes.count else { return false }
        if bytes[index] == UInt8(ascii: "0") { return bytes.count == index + 1 }
        while index < bytes.count {
            guard bytes[index] &- UInt8(ascii: "0") < 10 else { return false }
            index += 1
        }
        return true
    }

    /// A JSON string; text that is not valid UTF-8 (an SQL_ASCII database can hold any bytes)
    /// becomes `{"base64": "…"}` holding the original bytes, the rule every source follows.
    static func appendString<Sink: ByteOutput & ~Copyable>(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout Sink) {
        _ = EnvelopeWriter.appendText(bytes, to: &out)
    }

    /// `2024-01-02 03:04:05.5+00` → `"2024-01-02T03:04:05.5Z"`; `timestamp` (no zone) keeps no
    /// offset. `infinity` and BC dates stay as PostgreSQL prints them.
    static func appendTimestamp<Sink: ByteOutput & ~Copyable>(
        _ bytes: UnsafeBufferPointer<UInt8>, zoned: Bool, to out: inout Sink
    ) {
        let plain = bytes.allSatisfy {
            ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ":")
                || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: " ")
        }
        guard plain, bytes.count >= 19, bytes[10] == UInt8(ascii: " "), bytes[4] == UInt8(ascii: "-") else {
            appendString(bytes, to: &out)
            return
        }
        out.append(0x22)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[0..<10]))
        out.append(UInt8(ascii: "T"))
        var end = bytes.count
        if zoned, end >= 3, bytes[end - 3] == UInt8(ascii: "+"), bytes[end - 2] == UInt8(ascii: "0"),
            bytes[end - 1] == UInt8(ascii: "0")
        {
            end -= 3
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[11..<end]))
            out.append(UInt8(ascii: "Z"))
        } else {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[11..<end]))
        }
        out.append(0x22)
    }

    /// bytea in hex output (`\x0a0b`) as a base64 JSON string.
    static func appendBase64<Sink: ByteOutput & ~Copyable>(
        hexBytea bytes: UnsafeBufferPointer<UInt8>, to out: inout Sink
    ) {
        guard bytes.count >= 2, bytes[0] == UInt8(ascii: "\\"), bytes[1] == UInt8(ascii: "x"), bytes.count % 2 == 0
        else {
            appendString(bytes, to: &out)  // not hex output: keep the text
            return
        }
        var raw = [UInt8]()
        raw.reserveCapacity((bytes.count - 2) / 2)
        var index = 2
        while index < bytes.count {
            guard let high = hexValue(bytes[index]), let low = hexValue(bytes[index + 1]) else {
                appendString(bytes, to: &out)
                return
            }
            raw.append(high << 4 | low)
            index += 2
        }
        out.append(0x22)
        Data(raw).base64EncodedData().withUnsafeBytes { out.append(contentsOf: $0) }
        out.append(0x22)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// An array literal (`{1,2,NULL}`, `{{"a b","c\"d"},{e,f}}`, `[0:1]={1,2}`) as nested JSON
    /// arrays of converted elements. Text that is not a well-formed literal stays a string.
    static func appendArray<Sink: ByteOutput & ~Copyable>(
        text: UnsafeRawBufferPointer, elementOID: UInt32, to out: inout Sink
    ) {
        let bytes = text.bindMemory(to: UInt8.self)
        var start = 0
        if bytes.first == UInt8(ascii: "["), let equals = bytes.firstIndex(of: UInt8(ascii: "=")) { start = equals + 1 }
        var parser = ArrayLiteralParser(bytes: bytes, offset: start, kind: kind(of: elementOID))
        let mark = out.count
        if parser.array(to: &out), parser.offset == bytes.count { return }
        out.truncate(to: mark)
        appendString(bytes, to: &out)
    }
}
