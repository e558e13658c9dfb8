/// The Thrift compact protocol, as far as Parquet's footer and page headers need it: structs of
/// fields (i32, i64, bool, binary, nested structs, lists), written and read.
/// (https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md)
enum ThriftType: UInt8 {
    case stop = 0, boolTrue = 1, boolFalse = 2, byte = 3, i16 = 4, i32 = 5, i64 = 6, double = 7
    case binary = 8, list = 9, set = 10, map = 11, structure = 12
}

struct ThriftWriter {
    var out: [UInt8] = []
    private var lastField: [Int16] = [0]

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            out.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
    }

    mutating func zigzag(_ value: Int64) { varint(UInt64(bitPattern: (value << 1) ^ (value >> 63))) }

    private mutating func header(_ id: Int16, _ type: ThriftType) {
        let delta = id - lastField[lastField.count - 1]
        if delta > 0 && delta <= 15 {
            out.append(UInt8(delta) << 4 | type.rawValue)
        } else {
            out.append(type.rawValue)
            zigzag(Int64(id))
        }
        lastField[lastField.count - 1] = id
    }

    mutating func i32(_ id: Int16, _ value: Int32) {
        header(id, .i32)
        zigzag(Int64(value))
    }

    mutating func i64(_ id: Int16, _ value: Int64) {
        header(id, .i64)
        zigzag(value)
    }

    mutating func bool(_ id: Int16, _ value: Bool) { header(id, value ? .boolTrue : .boolFalse) }

    mutating func binary(_ id: Int16, _ bytes: [UInt8]) {
        header(id, .binary)
        varint(UInt64(bytes.count))
        out += bytes
    }

    mutating func string(_ id: Int16, _ text: String) { binary(id, Array(text.utf8)) }

    /// A struct field: `body` writes its fields.
    mutating func structure(_ id: Int16, _ body: (inout ThriftWriter) -> Void) {
        header(id, .structure)
        beginStruct()
        body(&self)
        endStruct()
    }

    mutating func beginStruct() { lastField.append(0) }

    mutating func endStruct() {
        out.append(ThriftType.stop.rawValue)
        lastField.removeLast()
    }

    /// A list field of `count` elements of `type`; the caller then writes the elements
    /// (`listI32`, `listBinary`, or `beginStruct`/`endStruct` for each struct).
    mutating func list(_ id: Int16, _ type: ThriftType, count: Int) {
        header(id, .list)
        if count < 15 {
            out.append(UInt8(count) << 4 | type.rawValue)
        } else {
            out.append(0xF0 | type.rawValue)
            varint(UInt64(count))
        }
    }

    mutating func listI32(_ value: Int32) { zigzag(Int64(value)) }

    mutating func listBinary(_ bytes: [UInt8]) {
        varint(UInt64(bytes.count))
        out += bytes
    }
}

/// Reads what `ThriftWriter` writes (and what other writers write in the same structs: unknown
/// fields are skipped). Every read is bounds-checked; a malformed input throws.
struct ThriftReader {
    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    let bytes: [UInt8]
    var index: Int

    init(_ bytes: [UInt8], at index: Int = 0) {
        self.bytes = bytes
        self.index = index
    }

    mutating func byte() throws -> UInt8 {
        guard index < bytes.count else { throw Malformed(description: "thrift: unexpected end at byte \(index)") }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try byte()
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
            guard shift < 64 else { throw Malformed(description: "thrift: varint too long at byte \(index)") }
        }
    }

    mutating func zigzag() throws -> Int64 {
        let raw = try varint()
        return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
    }

    mutating func binary() throws -> [UInt8] {
        let count = Int(try varint())
        guard count >= 0, count <= bytes.count - index else {
            throw Malformed(description: "thrift: binary of \(count) bytes past the end at byte \(index)")
        }
        defer { index += count }
        return Array(bytes[index..<(index + count)])
    }

    /// Reads a struct's fields, handing each (id, type) to `field`, which reads the value it
    /// knows and returns false for one to skip.
    mutating func readStruct(_ field: (inout ThriftReader, Int16, ThriftType) throws -> Bool) throws {
        var last: Int16 = 0
        while true {
            let head = try byte()
            guard let type = ThriftType(rawValue: head & 0x0F) else {
                throw Malformed(description: "thrift: unknown type \(head & 0x0F) at byte \(index - 1)")
            }
            if type == .stop { return }
            let delta = Int16(head >> 4)
            let id = delta == 0 ? Int16(truncatingIfNeeded: try zigzag()) : last + delta
            last = id
            if try !field(&self, id, type) { try skip(type) }
        }
    }

    /// A list header: element type and count.
    mutating func listHeader() throws -> (ThriftType, Int) {
        let head = try byte()
        guard let type = ThriftType(rawValue: head & 0x0F) else {
            throw Malformed(description: "thrift: unknown list element type at byte \(index - 1)")
        }
        let count = head >> 4 == 15 ? Int(try varint()) : Int(head >> 4)
        guard count <= bytes.count - index else { throw Malformed(description: "thrift: list too long") }
        return (type, count)
    }

    mutating func bool(_ type: ThriftType) -> Bool { type == .boolTrue }

    mutating func skip(_ type: ThriftType) throws {
        switch type {
        case .stop: return
        case .boolTrue, .boolFalse: return
        case .byte: _ = try byte()
        case .i16, .i32, .i64: _ = try varint()
        case .double: index += 8
        case .binary: _ = try binary()
        case .list, .set:
            let (element, count) = try listHeader()
            for _ in 0..<count {
                if element == .boolTrue || element == .boolFalse { _ = try byte() } else { try skip(element) }
            }
        case .map:
            let count = Int(try varint())
            guard count > 0 else { return }
            let types = try byte()
            guard let key = ThriftType(rawValue: types >> 4), let value = ThriftType(rawValue: types & 0x0F) else {
                throw Malformed(description: "thrift: unknown map types")
            }
            for _ in 0..<count {
                try skip(key)
                try skip(value)
            }
        case .structure: try readStruct { _, _, _ in false }
        }
        guard index <= bytes.count else { throw Malformed(description: "thrift: unexpected end") }
    }
}
