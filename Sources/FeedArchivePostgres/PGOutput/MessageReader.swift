/// Reads the big-endian fields of one pgoutput message.
struct MessageReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool { offset >= bytes.count }

    mutating func need(_ count: Int, _ what: @autoclosure () -> String) throws {
        guard count >= 0, bytes.count - offset >= count else {
            throw PGOutputError(message: "message ends inside \(what()) (offset \(offset) of \(bytes.count))")
        }
    }
    mutating func byte(_ what: @autoclosure () -> String) throws -> UInt8 {
        try need(1, what())
        defer { offset += 1 }
        return bytes[offset]
    }
    mutating func uint16(_ what: @autoclosure () -> String) throws -> UInt16 {
        try need(2, what())
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }
    mutating func uint32(_ what: @autoclosure () -> String) throws -> UInt32 {
        try need(4, what())
        var value: UInt32 = 0
        for index in 0..<4 { value = value << 8 | UInt32(bytes[offset + index]) }
        offset += 4
        return value
    }
    mutating func uint64(_ what: @autoclosure () -> String) throws -> UInt64 {
        try need(8, what())
        var value: UInt64 = 0
        for index in 0..<8 { value = value << 8 | UInt64(bytes[offset + index]) }
        offset += 8
        return value
    }
    mutating func cString(_ what: @autoclosure () -> String) throws -> String {
        guard let end = bytes[offset...].firstIndex(of: 0) else {
            throw PGOutputError(message: "\(what()) is not terminated")
        }
        defer { offset = end + 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<end]), as: UTF8.self)
    }
    mutating func slice(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        try need(count, what())
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }
}
