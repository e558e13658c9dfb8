import CZstd
import FeedArchive

/// Reads a flat Parquet file of the kinds `ParquetWriter` writes (data pages v1 with PLAIN or
/// dictionary values, the hybrid encoding for levels and indices, uncompressed or ZSTD pages).
/// Anything else, and any damage (bad magic, a footer or page past the end, a page that does
/// not decompress to its size, counts that do not add up), is a `ParquetError` saying where.
public struct ParquetReader {
    public struct Chunk {
        var type: Int32 = -1
        var codec: Int32 = 0
        var values: Int64 = 0
        var dataOffset: Int64 = -1
        var dictionaryOffset: Int64?
        var compressedSize: Int64 = 0
    }

    public let file: [UInt8]
    public private(set) var names: [String] = []
    private(set) var optional: [Bool] = []
    public private(set) var rows: Int64 = 0
    private(set) var groups: [(rows: Int64, chunks: [Chunk])] = []

    public init(_ file: [UInt8]) throws {
        self.file = file
        guard file.count >= 12, file.prefix(4).elementsEqual("PAR1".utf8), file.suffix(4).elementsEqual("PAR1".utf8)
        else { throw ParquetError("not a Parquet file: no PAR1 magic at its start and end") }
        let length =
            Int(file[file.count - 8]) | Int(file[file.count - 7]) << 8 | Int(file[file.count - 6]) << 16
            | Int(file[file.count - 5]) << 24
        guard length > 0, length <= file.count - 12 else {
            throw ParquetError("the footer length \(length) does not fit the file's \(file.count) bytes")
        }
        var reader = ThriftReader(file, at: file.count - 8 - length)
        do {
            try readFooter(&reader)
        } catch let error as ThriftReader.Malformed {
            throw ParquetError("damaged footer: \(error)")
        }
        guard reader.index == file.count - 8 else {
            throw ParquetError("the footer does not end where its length says")
        }
    }

    private mutating func readFooter(_ reader: inout ThriftReader) throws {
        var names: [String] = []
        var optional: [Bool] = []
        var rows: Int64 = 0
        var groups: [(Int64, [Chunk])] = []
        try reader.readStruct { reader, id, type in
            switch (id, type) {
            case (2, .list):
                let (_, count) = try reader.listHeader()
                for element in 0..<count {
                    var name = ""
                    var repetition: Int64 = 0
                    try reader.readStruct { reader, id, type in
                        switch (id, type) {
                        case (4, .binary): name = String(decoding: try reader.binary(), as: UTF8.self)
                        case (3, .i32): repetition = try reader.zigzag()
                        default: return false
                        }
                        return true
                    }
                    if element > 0 {
                        names.append(name)
                        optional.append(repetition == 1)
                    }
                }
            case (3, .i64): rows = try reader.zigzag()
            case (4, .list):
                let (_, count) = try reader.listHeader()
                for _ in 0..<count {
                    var groupRows: Int64 = 0
                    var chunks: [Chunk] = []
                    try reader.readStruct { reader, id, type in
                        switch (id, type) {
                        case (1, .list):
                            let (_, columns) = try reader.listHeader()
                            for _ in 0..<columns {
                                var chunk = Chunk()
                                try reader.readStruct { reader, id, type in
                                    guard id == 3, type == .structure else { return false }
                                    try reader.readStruct { reader, id, type in
                                        switch (id, type) {
                                        case (1, .i32): chunk.type = Int32(truncatingIfNeeded: try reader.zigzag())
                                        case (4, .i32): chunk.codec = Int32(truncatingIfNeeded: try reader.zigzag())
                                        case (5, .i64): chunk.values = try reader.zigzag()
                                        case (7, .i64): chunk.compressedSize = try reader.zigzag()
                                        case (9, .i64): chunk.dataOffset = try reader.zigzag()
                                        case (11, .i64): chunk.dictionaryOffset = try reader.zigzag()
                                        default: return false
                                        }
                                        return true
                                    }
                                    return true
                                }
                                chunks.append(chunk)
                            }
                        case (3, .i64): groupRows = try reader.zigzag()
                        default: return false
                        }
                        return true
                    }
                    groups.append((groupRows, chunks))
                }
            default: return false
            }
            return true
        }
        guard groups.allSatisfy({ $0.1.count == names.count }) else {
            throw ParquetError("a row group's columns differ from the schema's \(names.count)")
        }
        (self.names, self.optional, self.rows) = (names, optional, rows)
        self.groups = groups.map { (rows: $0.0, chunks: $0.1) }
    }

    public var rowGroups: Int { groups.count }

    /// The values of one column of one row group.
    public func column(_ column: Int, group: Int) throws -> ParquetColumnValues {
        let chunk = groups[group].chunks[column]
        let count = Int(groups[group].rows)
        let name = names[column]
        guard chunk.values == count else {
            throw ParquetError("column \(name): \(chunk.values) values for \(count) rows")
        }
        var offset = Int(chunk.dictionaryOffset ?? chunk.dataOffset)
        var dictionary: ParquetColumnValues?
        var out = ParquetColumnValues()
        while out.rows < count {
            guard offset >= 4, offset < file.count - 8 else {
                throw ParquetError("column \(name): a page at byte \(offset), outside the file")
            }
            var reader = ThriftReader(file, at: offset)
            var pageType: Int64 = -1
            var uncompressed = 0
            var compressed = 0
            var pageValues = 0
            var encoding: Int64 = 0
            var crc: UInt32?
            do {
                try reader.readStruct { reader, id, type in
                    switch (id, type) {
                    case (1, .i32): pageType = try reader.zigzag()
                    case (2, .i32): uncompressed = Int(try reader.zigzag())
                    case (3, .i32): compressed = Int(try reader.zigzag())
                    case (4, .i32): crc = UInt32(truncatingIfNeeded: try reader.zigzag())
                    case (5, .structure), (7, .structure):
                        try reader.readStruct { reader, id, type in
                            switch (id, type) {
                            case (1, .i32): pageValues = Int(try reader.zigzag())
                            case (2, .i32): encoding = try reader.zigzag()
                            default: return false
                            }
                            return true
                        }
                    default: return false
                    }
                    return true
                }
            } catch let error as ThriftReader.Malformed {
                throw ParquetError("column \(name): damaged page header at byte \(offset): \(error)")
            }
            let start = reader.index
            guard compressed >= 0, uncompressed >= 0, compressed <= file.count - 8 - start else {
                throw ParquetError("column \(name): the page at byte \(offset) runs past the end of the file")
            }
            let raw = Array(file[start..<(start + compressed)])
            if let crc, crc32(raw) != crc {
                throw ParquetError(
                    "column \(name): the page at byte \(offset) fails its checksum (the file was changed)")
            }
            let body = try decompress(raw, codec: chunk.codec, size: uncompressed)
            offset = start + compressed
            switch pageType {
            case 2:
                dictionary = try plain(body, type: chunk.type, count: pageValues, name: name)
            case 0:
                try decodeDataPage(
                    body, values: pageValues, encoding: encoding, column: column, chunk: chunk, dictionary: dictionary,
                    into: &out)
            default:
                throw ParquetError(
                    "column \(name): page type \(pageType) at byte \(offset) is not one this reader knows")
            }
        }
        guard out.rows == count else { throw ParquetError("column \(name): \(out.rows) values for \(count) rows") }
        return out
    }

    private func decodeDataPage(
        _ body: [UInt8], values: Int, encoding: Int64, column: Int, chunk: Chunk, dictionary: ParquetColumnValues?,
        into out: inout ParquetColumnValues
    ) throws {
        let name = names[column]
        var index = 0
        var present = [Bool](repeating: true, count: values)
        if optional[column] {
            guard body.count >= 4 else { throw ParquetError("column \(name): page too short for its levels") }
            let length = Int(body[0]) | Int(body[1]) << 8 | Int(body[2]) << 16 | Int(body[3]) << 24
            guard length <= body.count - 4 else { throw ParquetError("column \(name): levels past the page's end") }
            present = try decodeHybrid(Array(body[4..<(4 + length)]), width: 1, count: values, name: name).map {
                $0 == 1
            }
            index = 4 + length
        }
        let defined = present.reduce(0) { $0 + ($1 ? 1 : 0) }
        let rest = Array(body[index...])
        var decoded: ParquetColumnValues
        switch encoding {
        case 0:
            decoded = try plain(rest, type: chunk.type, count: defined, name: name)
        case 8, 2:
            guard let dictionary, let width = rest.first, width <= 32 else {
                throw ParquetError("column \(name): dictionary indices without a dictionary")
            }
            let indices = try decodeHybrid(Array(rest.dropFirst()), width: Int(width), count: defined, name: name)
            decoded = ParquetColumnValues()
            for entry in indices {
                guard entry >= 0, Int(entry) < dictionary.rows else {
                    throw ParquetError("column \(name): dictionary index \(entry) out of range")
                }
                switch chunk.type {
                case 6: decoded.append(bytes: dictionary.value(Int(entry)))
                case 2: decoded.append(int: dictionary.ints[Int(entry)])
                default: throw ParquetError("column \(name): a dictionary of this type is not supported")
                }
            }
        default:
            throw ParquetError("column \(name): encoding \(encoding) is not one this reader knows")
        }
        var next = 0
        for isPresent in present {
            guard isPresent else {
                out.appendNull()
                continue
            }
            switch chunk.type {
            case 6: out.append(bytes: decoded.value(next))
            case 2: out.append(int: decoded.ints[next])
            case 5: out.append(double: decoded.doubles[next])
            case 0: out.append(bool: decoded.bools[next])
            default: throw ParquetError("column \(name): physical type \(chunk.type) is not supported")
            }
            next += 1
        }
    }

    private func plain(_ bytes: [UInt8], type: Int32, count: Int, name: String) throws -> ParquetColumnValues {
        var out = ParquetColumnValues()
        var index = 0
        func little(_ width: Int) throws -> UInt64 {
            guard index + width <= bytes.count else { throw ParquetError("column \(name): values past the page's end") }
            var value: UInt64 = 0
            for byte in 0..<width { value |= UInt64(bytes[index + byte]) << (8 * UInt64(byte)) }
            index += width
            return value
        }
        for position in 0..<count {
            switch type {
            case 6:
                let length = Int(try little(4))
                guard length <= bytes.count - index else {
                    throw ParquetError("column \(name): a value of \(length) bytes past the page's end")
                }
                out.append(bytes: bytes[index..<(index + length)])
                index += length
            case 2: out.append(int: Int64(bitPattern: try little(8)))
            case 5: out.append(double: Double(bitPattern: try little(8)))
            case 0:
                guard position / 8 < bytes.count else {
                    throw ParquetError("column \(name): values past the page's end")
                }
                out.append(bool: bytes[position / 8] >> UInt8(position % 8) & 1 == 1)
            default: throw ParquetError("column \(name): physical type \(type) is not supported")
            }
        }
        return out
    }

    private func decompress(_ body: [UInt8], codec: Int32, size: Int) throws -> [UInt8] {
        switch codec {
        case 0:
            guard body.count == size else { throw ParquetError("an uncompressed page of the wrong size") }
            return body
        case 6:
            var out = [UInt8](repeating: 0, count: size)
            let written = body.withUnsafeBytes { input in
                out.withUnsafeMutableBytes { output in
                    ZSTD_decompress(output.baseAddress, output.count, input.baseAddress, input.count)
                }
            }
            guard ZSTD_isError(written) == 0, written == size else {
                throw ParquetError("a zstd page does not decompress to its \(size) bytes")
            }
            return out
        default:
            throw ParquetError("compression codec \(codec) is not one this reader knows")
        }
    }
}

/// Reads the RLE/bit-packed hybrid: `count` values of `width` bits.
func decodeHybrid(_ bytes: [UInt8], width: Int, count: Int, name: String) throws -> [Int32] {
    var reader = ThriftReader(bytes)
    var out: [Int32] = []
    out.reserveCapacity(count)
    let valueBytes = (width + 7) / 8
    do {
        while out.count < count {
            let header = try reader.varint()
            if header & 1 == 0 {
                var value: UInt32 = 0
                for byte in 0..<valueBytes { value |= UInt32(try reader.byte()) << (8 * UInt32(byte)) }
                let run = Int(header >> 1)
                guard run > 0, run <= count - out.count else { throw ParquetError("column \(name): a run too long") }
                out += repeatElement(Int32(bitPattern: value), count: run)
            } else {
                let groups = Int(header >> 1)
                var bits: UInt64 = 0
                var held = 0
                for _ in 0..<(groups * 8) {
                    while held < width {
                        bits |= UInt64(try reader.byte()) << UInt64(held)
                        held += 8
                    }
                    let value = Int32(truncatingIfNeeded: bits & ((1 << UInt64(width)) - 1))
                    bits >>= UInt64(width)
                    held -= width
                    if out.count < count { out.append(value) }
                }
            }
        }
    } catch let error as ThriftReader.Malformed {
        throw ParquetError("column \(name): levels or indices end early (\(error))")
    }
    return out
}

extension EnvelopeParquet {
    /// The envelope lines a Parquet blob holds, each followed by a newline, byte for byte as
    /// they were written.
    public static func envelopes(from file: [UInt8]) throws -> [UInt8] {
        let reader = try ParquetReader(file)
        // The envelope's columns first; promoted columns after them are copies of `after`'s.
        guard reader.names.count >= columns.count, Array(reader.names.prefix(columns.count)) == columns.map(\.name)
        else {
            throw ParquetError("columns \(reader.names) do not start with the envelope's")
        }
        var out: [UInt8] = []
        for group in 0..<reader.rowGroups {
            let values = try (0..<8).map { try reader.column($0, group: group) }
            var cursors = [Int](repeating: 0, count: 8)
            for row in 0..<values[0].rows {
                out += Array("{\"pos\":".utf8)
                for number in 0..<8 {
                    if number > 0 {
                        out += Array(",\"\(keys[number])\":".utf8)
                    }
                    guard values[number].present[row] else {
                        out += Array("null".utf8)
                        continue
                    }
                    let index = cursors[number]
                    cursors[number] += 1
                    switch number {
                    case 0, 1, 2:
                        _ = Array(values[number].value(index)).withUnsafeBufferPointer {
                            JSONText.appendString(utf8: $0, to: &out)
                        }
                    case 3:
                        out += Array(("\"" + formatRFC3339(microseconds: values[3].ints[index]) + "\"").utf8)
                    default:
                        out += values[number].value(index)
                    }
                }
                out += [0x7D, 0x0A]
            }
        }
        return out
    }
}
