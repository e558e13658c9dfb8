import CZstd

/// A flat Parquet file (one level of optional or required columns), written and read: data
/// pages v1, PLAIN values or a dictionary (RLE_DICTIONARY indices), definition levels in the
/// RLE/bit-packed hybrid, ZSTD page compression, min/max statistics with the type-defined
/// order. (apache/parquet-format: `parquet.thrift`, `Encodings.md`.)
public struct ParquetColumn: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// UTF-8 text (BYTE_ARRAY, STRING).
        case string
        /// JSON text (BYTE_ARRAY, JSON): DuckDB reads it as its JSON type.
        case json
        case int64
        case double
        case bool
        /// Microseconds since 1970, UTC (INT64, TIMESTAMP(MICROS, adjusted to UTC)).
        case timestampMicros
    }

    public var name: String
    public var kind: Kind
    public var optional: Bool
    /// Dictionary-encoded (for a column of few distinct values).
    public var dictionary: Bool
    /// Min/max statistics in the column chunk, for engines to skip row groups.
    public var statistics: Bool

    public init(_ name: String, _ kind: Kind, optional: Bool, dictionary: Bool = false, statistics: Bool = false) {
        self.name = name
        self.kind = kind
        self.optional = optional
        self.dictionary = dictionary
        self.statistics = statistics
    }

    var physical: Int32 {
        switch kind {
        case .string, .json: 6  // BYTE_ARRAY
        case .int64, .timestampMicros: 2  // INT64
        case .double: 5  // DOUBLE
        case .bool: 0  // BOOLEAN
        }
    }
}

/// One column's values for a row group: `present` per row (all true for a required column),
/// the values of the present rows in the buffer of their kind.
public struct ParquetColumnValues: Sendable {
    public var present: [Bool] = []
    /// BYTE_ARRAY values, back to back, and where each ends.
    public var bytes: [UInt8] = []
    public var ends: [Int] = []
    public var ints: [Int64] = []
    public var doubles: [Double] = []
    public var bools: [Bool] = []

    public init() {}

    public var rows: Int { present.count }

    public mutating func appendNull() { present.append(false) }

    public mutating func append(bytes value: some Collection<UInt8>) {
        present.append(true)
        bytes.append(contentsOf: value)
        ends.append(bytes.count)
    }

    public mutating func append(int value: Int64) {
        present.append(true)
        ints.append(value)
    }

    public mutating func append(double value: Double) {
        present.append(true)
        doubles.append(value)
    }

    public mutating func append(bool value: Bool) {
        present.append(true)
        bools.append(value)
    }

    func value(_ index: Int) -> ArraySlice<UInt8> { bytes[(index == 0 ? 0 : ends[index - 1])..<ends[index]] }

    public mutating func removeAll() {
        present.removeAll(keepingCapacity: true)
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        ints.removeAll(keepingCapacity: true)
        doubles.removeAll(keepingCapacity: true)
        bools.removeAll(keepingCapacity: true)
    }
}

public struct ParquetError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Writes a Parquet file to `sink` a row group at a time; `finish` writes the footer.
public struct ParquetWriter {
    public init(columns: [ParquetColumn], level: Int32 = 3, sink: @escaping ([UInt8]) throws -> Void) throws {
        try self.init(columns: columns, level: level, compressor: nil, sink: sink)
    }

    public let columns: [ParquetColumn]
    public let level: Int32
    private let sink: ([UInt8]) throws -> Void
    private var offset: Int64 = 0
    private var rowGroups: [[UInt8]] = []  // each RowGroup struct, encoded
    private var rows: Int64 = 0
    private let compressor: PageCompressor
    private let pageScratch = PageScratch()

    /// `level`: the zstd level of the pages. `compressor`: zstd contexts to keep using (a
    /// writer of many files one after another), else new ones.
    init(
        columns: [ParquetColumn], level: Int32 = 3, compressor: PageCompressor? = nil,
        sink: @escaping ([UInt8]) throws -> Void
    ) throws {
        self.columns = columns
        self.level = level
        self.sink = sink
        self.compressor = compressor ?? PageCompressor()
        try emit(Array("PAR1".utf8))
    }

    private mutating func emit(_ bytes: [UInt8]) throws {
        try sink(bytes)
        offset += Int64(bytes.count)
    }

    /// Writes one row group; every column holds the same number of rows.
    public mutating func writeRowGroup(_ values: [ParquetColumnValues]) throws {
        precondition(values.count == columns.count)
        let count = values.first?.rows ?? 0
        guard count > 0 else { return }
        guard values.allSatisfy({ $0.rows == count }) else { throw ParquetError("columns of unequal length") }
        let start = offset
        var group = ThriftWriter()
        group.beginStruct()
        group.list(1, .structure, count: columns.count)
        var totalUncompressed: Int64 = 0
        for (column, data) in zip(columns, values) {
            let chunkStart = offset
            var dictionaryOffset: Int64?
            var encodings: [Int32] = [0, 3]  // PLAIN, RLE (levels)
            var valueEncoding: Int32 = 0
            // The data page: definition levels (optional columns), then the values, built in
            // one buffer (a page can be most of a row group: no copies of it).
            var pageBytes = pageScratch.take()
            if column.optional {
                var hybrid: [UInt8] = []
                encodeHybrid(data.present.map { $0 ? 1 : 0 }, width: 1, to: &hybrid)
                appendUInt32(UInt32(hybrid.count), to: &pageBytes)
                pageBytes += hybrid
            }
            if column.dictionary, column.physical == 6 {
                // Distinct values in first-seen order; indices in the hybrid encoding.
                var index: [ArraySlice<UInt8>: Int32] = [:]
                var dictionary: [UInt8] = []
                var indices: [Int32] = []
                indices.reserveCapacity(data.ends.count)
                for position in data.ends.indices {
                    let value = data.value(position)
                    if let known = index[value] {
                        indices.append(known)
                    } else {
                        let next = Int32(index.count)
                        index[value] = next
                        appendLength(value.count, to: &dictionary)
                        dictionary += value
                        indices.append(next)
                    }
                }
                dictionaryOffset = offset
                let (header, body, uncompressed) = try page(type: 2, values: dictionary) { page in
                    page.structure(7) { dict in
                        dict.i32(1, Int32(index.count))
                        dict.i32(2, 0)  // PLAIN
                    }
                }
                try emit(header)
                try emit(body)
                totalUncompressed += uncompressed
                let width = max(1, bitWidth(index.count - 1))
                pageBytes.append(UInt8(width))
                encodeHybrid(indices, width: width, to: &pageBytes)
                valueEncoding = 8  // RLE_DICTIONARY
                encodings = [0, 3, 8]
            } else {
                plain(column, data, into: &pageBytes)
            }
            let dataOffset = offset
            let nulls = data.present.reduce(0) { $0 + ($1 ? 0 : 1) }
            let stats = column.statistics ? statistics(column, data, nulls: nulls) : nil
            let (header, body, uncompressed) = try page(type: 0, values: pageBytes) { page in
                page.structure(5) { dataPage in
                    dataPage.i32(1, Int32(count))
                    dataPage.i32(2, valueEncoding)
                    dataPage.i32(3, 3)  // RLE
                    dataPage.i32(4, 3)
                    if let stats { dataPage.structure(5) { stats(&$0) } }
                }
            }
            pageScratch.give(pageBytes)
            try emit(header)
            try emit(body)
            totalUncompressed += uncompressed
            let chunkSize = offset - chunkStart
            let uncompressedChunk = uncompressed + (dictionaryOffset.map { dataOffset - $0 } ?? 0)
            group.beginStruct()
            group.i64(2, chunkStart)
            group.structure(3) { meta in
                meta.i32(1, column.physical)
                meta.list(2, .i32, count: encodings.count)
                for encoding in encodings { meta.listI32(encoding) }
                meta.list(3, .binary, count: 1)
                meta.listBinary(Array(column.name.utf8))
                meta.i32(4, 6)  // ZSTD
                meta.i64(5, Int64(count))
                meta.i64(6, uncompressedChunk)
                meta.i64(7, chunkSize)
                meta.i64(9, dataOffset)
                if let dictionaryOffset { meta.i64(11, dictionaryOffset) }
                if let stats { meta.structure(12) { stats(&$0) } }
            }
            group.endStruct()
        }
        group.i64(2, totalUncompressed)
        group.i64(3, Int64(count))
        group.i64(5, start)
        group.i64(6, offset - start)
        group.endStruct()
        rowGroups.append(group.out)
        rows += Int64(count)
    }

    /// Writes the footer; the file is complete after it.
    public mutating func finish(createdBy: String) throws {
        var footer = ThriftWriter()
        footer.beginStruct()
        footer.i32(1, 1)
        footer.list(2, .structure, count: columns.count + 1)
        footer.beginStruct()
        footer.string(4, "schema")
        footer.i32(5, Int32(columns.count))
        footer.endStruct()
        for column in columns {
            footer.beginStruct()
            footer.i32(1, column.physical)
            footer.i32(3, column.optional ? 1 : 0)
            footer.string(4, column.name)
            switch column.kind {
            case .string:
                footer.i32(6, 0)  // UTF8
                footer.structure(10) { $0.structure(1) { _ in } }
            case .json:
                footer.i32(6, 19)  // JSON
                footer.structure(10) { $0.structure(12) { _ in } }
            case .timestampMicros:
                footer.i32(6, 10)  // TIMESTAMP_MICROS
                footer.structure(10) { logical in
                    logical.structure(8) { timestamp in
                        timestamp.bool(1, true)
                        timestamp.structure(2) { $0.structure(2) { _ in } }
                    }
                }
            case .int64, .double, .bool: break
            }
            footer.endStruct()
        }
        footer.i64(3, rows)
        footer.list(4, .structure, count: rowGroups.count)
        for group in rowGroups { footer.out += group }
        footer.string(6, createdBy)
        footer.list(7, .structure, count: columns.count)
        for _ in columns {
            footer.beginStruct()
            footer.structure(1) { _ in }  // TYPE_ORDER
            footer.endStruct()
        }
        footer.endStruct()
        var tail = footer.out
        appendUInt32(UInt32(footer.out.count), to: &tail)
        tail += Array("PAR1".utf8)
        try emit(tail)
    }

    /// A page: its header (with the sizes) and its zstd-compressed body.
    private func page(type: Int32, values: [UInt8], _ specific: (inout ThriftWriter) -> Void) throws -> (
        [UInt8], [UInt8], Int64
    ) {
        let body = try compress(values)
        var header = ThriftWriter()
        header.beginStruct()
        header.i32(1, type)
        header.i32(2, Int32(values.count))
        header.i32(3, Int32(body.count))
        header.i32(4, Int32(bitPattern: crc32(body)))  // of the compressed page, as the spec says
        specific(&header)
        header.endStruct()
        return (header.out, body, Int64(header.out.count + values.count))
    }

    private func compress(_ bytes: [UInt8]) throws -> [UInt8] {
        try compressor.compress(bytes, level: level)
    }

    private func plain(_ column: ParquetColumn, _ data: ParquetColumnValues, into out: inout [UInt8]) {
        switch column.kind {
        case .string, .json:
            out.reserveCapacity(out.count + data.bytes.count + 4 * data.ends.count)
            var start = 0
            for end in data.ends {
                appendLength(end - start, to: &out)
                out += data.bytes[start..<end]
                start = end
            }
        case .int64, .timestampMicros:
            out.reserveCapacity(8 * data.ints.count)
            for value in data.ints { withUnsafeBytes(of: value.littleEndian) { out += $0 } }
        case .double:
            for value in data.doubles { withUnsafeBytes(of: value.bitPattern.littleEndian) { out += $0 } }
        case .bool:
            var byte: UInt8 = 0
            for (index, value) in data.bools.enumerated() {
                if value { byte |= 1 << UInt8(index % 8) }
                if index % 8 == 7 {
                    out.append(byte)
                    byte = 0
                }
            }
            if data.bools.count % 8 != 0 { out.append(byte) }
        }
    }

    /// Min, max and null count of a column chunk (min_value/max_value: the type-defined order).
    private func statistics(_ column: ParquetColumn, _ data: ParquetColumnValues, nulls: Int) -> (
        (inout ThriftWriter) -> Void
    )? {
        var minimum: [UInt8]?
        var maximum: [UInt8]?
        switch column.kind {
        case .string, .json:
            guard !data.ends.isEmpty else { break }
            var low = data.value(0)
            var high = low
            for index in 1..<data.ends.count {
                let value = data.value(index)
                if value.lexicographicallyPrecedes(low) { low = value }
                if high.lexicographicallyPrecedes(value) { high = value }
            }
            // Long values make no useful bounds (and bloat the footer): left out.
            if low.count <= 64 && high.count <= 64 { (minimum, maximum) = (Array(low), Array(high)) }
        case .int64, .timestampMicros:
            if let low = data.ints.min(), let high = data.ints.max() {
                minimum = withUnsafeBytes(of: low.littleEndian) { Array($0) }
                maximum = withUnsafeBytes(of: high.littleEndian) { Array($0) }
            }
        case .double:
            let numbers = data.doubles.filter { !$0.isNaN }
            if let low = numbers.min(), let high = numbers.max() {
                minimum = withUnsafeBytes(of: (low == 0 ? -0.0 : low).bitPattern.littleEndian) { Array($0) }
                maximum = withUnsafeBytes(of: (high == 0 ? 0.0 : high).bitPattern.littleEndian) { Array($0) }
            }
        case .bool:
            break
        }
        return { stats in
            stats.i64(3, Int64(nulls))
            if let maximum { stats.binary(5, maximum) }
            if let minimum { stats.binary(6, minimum) }
        }
    }
}

func appendLength(_ count: Int, to out: inout [UInt8]) { appendUInt32(UInt32(count), to: &out) }

func appendUInt32(_ value: UInt32, to out: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { out += $0 }
}

func bitWidth(_ value: Int) -> Int { value <= 0 ? 0 : Int.bitWidth - value.leadingZeroBitCount }

/// The RLE/bit-packed hybrid, written as runs of equal values only (valid for every reader).
func encodeHybrid(_ values: [Int32], width: Int, to out: inout [UInt8]) {
    var writer = ThriftWriter()
    let valueBytes = (width + 7) / 8
    var index = 0
    while index < values.count {
        let value = values[index]
        var end = index + 1
        while end < values.count && values[end] == value { end += 1 }
        writer.varint(UInt64(end - index) << 1)
        for byte in 0..<valueBytes { writer.out.append(UInt8(truncatingIfNeeded: value >> (8 * byte))) }
        index = end
    }
    out += writer.out
}

/// CRC-32 (the zlib/gzip polynomial), of which Parquet's page `crc` is made.
func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    bytes.withUnsafeBytes { raw in
        crcTables.withUnsafeBufferPointer { t in
            // t[256 * k + b]: the CRC of byte b followed by k zero bytes.
            var index = 0
            while index + 8 <= raw.count {
                let low = raw.loadUnaligned(fromByteOffset: index, as: UInt32.self).littleEndian ^ crc
                let high = raw.loadUnaligned(fromByteOffset: index + 4, as: UInt32.self).littleEndian
                crc =
                    t[1792 + Int(low & 0xFF)] ^ t[1536 + Int((low >> 8) & 0xFF)]
                    ^ t[1280 + Int((low >> 16) & 0xFF)] ^ t[1024 + Int(low >> 24)]
                    ^ t[768 + Int(high & 0xFF)] ^ t[512 + Int((high >> 8) & 0xFF)]
                    ^ t[256 + Int((high >> 16) & 0xFF)] ^ t[Int(high >> 24)]
                index += 8
            }
            while index < raw.count {
                crc = t[Int((crc ^ UInt32(raw[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
        }
    }
    return crc ^ 0xFFFF_FFFF
}

let crcTable: [UInt32] = (0..<256).map { index in
    var value = UInt32(index)
    for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
    return value
}

/// zstd for pages: one context kept for the file (a context per page costs fresh memory and
/// its page faults), and for a large page (1 MiB and more) one with two worker threads, so the
/// big JSON columns compress on both cores.
final class PageCompressor {
    private let context: OpaquePointer
    private var parallel: OpaquePointer?
    /// Where pages are compressed into, kept: a page buffer of fresh memory per page costs its
    /// zeroing and page faults.
    private var scratch: [UInt8] = []

    init() { context = ZSTD_createCCtx() }

    deinit {
        ZSTD_freeCCtx(context)
        if let parallel { ZSTD_freeCCtx(parallel) }
    }

    func compress(_ bytes: [UInt8], level: Int32) throws -> [UInt8] {
        var chosen = context
        if bytes.count >= 1 << 20 {
            if parallel == nil {
                parallel = ZSTD_createCCtx()
                // Without multithreading in the library, this fails: the page compresses on one.
                if ZSTD_isError(ZSTD_CCtx_setParameter(parallel, ZSTD_c_nbWorkers, 2)) != 0 {
                    ZSTD_freeCCtx(parallel)
                    parallel = nil
                }
            }
            if let parallel { chosen = parallel }
        }
        ZSTD_CCtx_reset(chosen, ZSTD_reset_session_only)
        ZSTD_CCtx_setParameter(chosen, ZSTD_c_compressionLevel, level)
        let bound = ZSTD_compressBound(bytes.count)
        if scratch.count < bound { scratch = [UInt8](repeating: 0, count: bound) }
        let written = bytes.withUnsafeBytes { input in
            scratch.withUnsafeMutableBytes { output in
                ZSTD_compress2(chosen, output.baseAddress, bound, input.baseAddress, input.count)
            }
        }
        if ZSTD_isError(written) != 0 { throw ParquetError("zstd: \(String(cString: ZSTD_getErrorName(written)))") }
        return Array(scratch[..<written])
    }
}

/// A page buffer handed from one page to the next (its capacity kept).
final class PageScratch {
    private var buffer: [UInt8] = []

    func take() -> [UInt8] {
        var taken: [UInt8] = []
        swap(&taken, &buffer)
        taken.removeAll(keepingCapacity: true)
        return taken
    }

    func give(_ used: [UInt8]) { buffer = used }
}

/// CRC-32 eight bytes at a time: eight tables of 256, one after another (slicing-by-8).
let crcTables: [UInt32] = {
    var tables = crcTable
    for k in 1..<8 {
        for b in 0..<256 {
            let previous = tables[256 * (k - 1) + b]
            tables.append((previous >> 8) ^ crcTable[Int(previous & 0xFF)])
        }
    }
    return tables
}()
