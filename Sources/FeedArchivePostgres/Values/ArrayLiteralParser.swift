import FeedArchive

/// Reads a PostgreSQL array literal (`{1,2,"a b",NULL}`) into a JSON array, its elements
/// converted as the element type's values are; false when the text is not such a literal.
struct ArrayLiteralParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var offset: Int
    let kind: PGValue.Kind

    mutating func array<Sink: ByteOutput & ~Copyable>(to out: inout Sink) -> Bool {
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: "{") else { return false }
        offset += 1
        out.append(UInt8(ascii: "["))
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") {
            offset += 1
            out.append(UInt8(ascii: "]"))
            return true
        }
        var first = true
        while offset < bytes.count {
            if !first { out.append(0x2C) }
            first = false
            if bytes[offset] == UInt8(ascii: "{") {
                guard array(to: &out) else { return false }
            } else if bytes[offset] == UInt8(ascii: "\"") {
                offset += 1
                var element: [UInt8] = []
                while offset < bytes.count, bytes[offset] != UInt8(ascii: "\"") {
                    if bytes[offset] == UInt8(ascii: "\\") { offset += 1 }
                    guard offset < bytes.count else { return false }
                    element.append(bytes[offset])
                    offset += 1
                }
                guard offset < bytes.count else { return false }
                offset += 1
                element.withUnsafeBytes { PGValue.appendScalar(text: $0, kind: kind, to: &out) }
            } else {
                let begin = offset
                while offset < bytes.count, bytes[offset] != UInt8(ascii: ","), bytes[offset] != UInt8(ascii: "}") {
                    offset += 1
                }
                let element = UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[begin..<offset]))
                if element.count == 4, String(decoding: element, as: UTF8.self).uppercased() == "NULL" {
                    JSONText.appendLiteral("null", to: &out)
                } else {
                    PGValue.appendScalar(text: element, kind: kind, to: &out)
                }
            }
            guard offset < bytes.count else { return false }
            if bytes[offset] == UInt8(ascii: ",") {
                offset += 1
                continue
            }
            if bytes[offset] == UInt8(ascii: "}") {
                offset += 1
                out.append(UInt8(ascii: "]"))
                return true
            }
            return false
        }
        return false
    }
}
