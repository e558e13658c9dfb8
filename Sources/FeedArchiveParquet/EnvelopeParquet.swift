import FeedArchive
import Foundation

/// The record envelope as Parquet columns, losslessly: `pos`, `part`, `op` (dictionary) as
/// strings, `ts` as TIMESTAMP(MICROS, UTC), `key`, `after`, `before`, `source` as JSON text
/// (their bytes as the envelope holds them; a JSON `null` is a Parquet null). Reading the file
/// back gives the envelope lines byte for byte (DESIGN.md "Record envelope"); a line that would
/// not come back so is refused when written.
public enum EnvelopeParquet {
    public static let columns: [ParquetColumn] = [
        ParquetColumn("pos", .string, optional: false, statistics: true),
        ParquetColumn("part", .string, optional: false, dictionary: true, statistics: true),
        ParquetColumn("op", .string, optional: false, dictionary: true),
        ParquetColumn("ts", .timestampMicros, optional: true, statistics: true),
        ParquetColumn("key", .json, optional: true),
        ParquetColumn("after", .json, optional: true),
        ParquetColumn("before", .json, optional: true),
        ParquetColumn("source", .json, optional: true),
    ]

    static let keys = EnvelopeFields.keys

    /// The promoted columns `ArchiveSettings.formatOptions` names (`name:type,…`): optional,
    /// with statistics; a value missing or of another type is null (it stays in `after`).
    public static func promoted(_ options: String) -> [ParquetColumn] {
        options.split(separator: ",").compactMap { field in
            let parts = field.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { return nil }
            let kind: ParquetColumn.Kind
            switch parts[1] {
            case "string": kind = .string
            case "int64": kind = .int64
            case "double": kind = .double
            case "bool": kind = .bool
            case "timestamp": kind = .timestampMicros
            default: return nil
            }
            return ParquetColumn(parts[0], kind, optional: true, statistics: kind != .bool)
        }
    }

    /// The ranges of the values of the top-level members of a JSON object, by their raw key
    /// text (with its quotes), for the keys in `wanted`.
    static func members(_ object: UnsafeBufferPointer<UInt8>, wanted: Set<[UInt8]>) -> [[UInt8]: Range<Int>] {
        var found: [[UInt8]: Range<Int>] = [:]
        guard object.count >= 2, object.first == 0x7B else { return found }
        var index = 1
        func skipSpace() {
            while index < object.count, [0x20, 0x09, 0x0A, 0x0D].contains(object[index]) { index += 1 }
        }
        while index < object.count {
            skipSpace()
            guard index < object.count, object[index] == 0x22, let keyEnd = try? skipValue(object, from: index) else {
                return found
            }
            let key = Array(object[index..<keyEnd])
            index = keyEnd
            skipSpace()
            guard index < object.count, object[index] == 0x3A else { return found }
            index += 1
            skipSpace()
            guard let valueEnd = try? skipValue(object, from: index) else { return found }
            if wanted.contains(key) {
                var end = valueEnd
                while end > index, [0x20, 0x09, 0x0A, 0x0D].contains(object[end - 1]) { end -= 1 }
                found[key] = index..<end
            }
            index = valueEnd
            skipSpace()
            guard index < object.count, object[index] == 0x2C else { return found }
            index += 1
        }
        return found
    }

    static func split(_ line: UnsafeBufferPointer<UInt8>) throws -> [Range<Int>] {
        do {
            return try EnvelopeFields.split(line)
        } catch let error as EnvelopeFields.Malformed {
            throw ParquetError(error.description)
        }
    }

    static func skipValue(_ line: UnsafeBufferPointer<UInt8>, from start: Int) throws -> Int {
        try EnvelopeFields.skipValue(line, from: start)
    }

    /// Any JSON string's content, unescaped (`\\uXXXX` with surrogate pairs too); nil for a
    /// value that is not a string.
    static func jsonString(_ quoted: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard quoted.count >= 2, quoted.first == 0x22, quoted.last == 0x22 else { return nil }
        if !quoted.contains(0x5C) { return Array(quoted.dropFirst().dropLast()) }
        guard let data = "[\(String(decoding: quoted, as: UTF8.self))]".data(using: .utf8),
            let array = try? JSONSerialization.jsonObject(with: data) as? [String], let string = array.first
        else { return nil }
        return Array(string.utf8)
    }

    /// A JSON string's content, unescaped; nil when it is not a string this module writes back
    /// the same (the round trip is checked by the caller).
    static func unescape(_ quoted: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard quoted.count >= 2, quoted.first == 0x22, quoted.last == 0x22 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(quoted.count - 2)
        var index = 1
        while index < quoted.count - 1 {
            let byte = quoted[index]
            guard byte == 0x5C else {
                out.append(byte)
                index += 1
                continue
            }
            guard index + 1 < quoted.count - 1 else { return nil }
            let escaped = quoted[index + 1]
            index += 2
            switch escaped {
            case 0x22, 0x5C, 0x2F: out.append(escaped)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x75:
                guard index + 4 <= quoted.count - 1,
                    let code = UInt32(String(decoding: quoted[index..<(index + 4)], as: UTF8.self), radix: 16),
                    code < 0x80
                else { return nil }  // only control characters are written as \u00xx
                out.append(UInt8(code))
                index += 4
            default: return nil
            }
        }
        return out
    }
}

/// Envelope lines in, a Parquet file out (to `sink`), in row groups of at most `rowGroupBytes`
/// of envelope text.
public struct EnvelopeParquetWriter {
    private var writer: ParquetWriter
    private var values = [ParquetColumnValues](repeating: ParquetColumnValues(), count: 8)
    private var groupBytes = 0
    public let rowGroupBytes: Int
    public private(set) var records: Int64 = 0
    private let level: Int32
    private let sink: ([UInt8]) throws -> Void
    private let compressor = PageCompressor()
    /// Promoted columns, after the envelope's, and their keys as JSON text.
    private let promoted: [ParquetColumn]
    private let promotedKeys: [[UInt8]]

    /// `promoted`: top-level fields of `after` also written as typed columns.
    public init(
        level: Int32 = 3, rowGroupBytes: Int = 128 << 20, promoted: [ParquetColumn] = [],
        sink: @escaping ([UInt8]) throws -> Void
    ) throws {
        self.level = level
        self.sink = sink
        self.promoted = promoted
        promotedKeys = promoted.map { column in
            var key: [UInt8] = []
            JSONText.appendString(column.name, to: &key)
            return key
        }
        values = [ParquetColumnValues](repeating: ParquetColumnValues(), count: 8 + promoted.count)
        writer = try ParquetWriter(
            columns: EnvelopeParquet.columns + promoted, level: level, compressor: compressor, sink: sink)
        self.rowGroupBytes = rowGroupBytes
    }

    /// Starts a new file, keeping the column buffers and zstd contexts of the last one (a
    /// writer of many blobs would otherwise touch fresh memory for each).
    public mutating func reset() throws {
        for index in values.indices { values[index].removeAll() }
        groupBytes = 0
        records = 0
        writer = try ParquetWriter(
            columns: EnvelopeParquet.columns + promoted, level: level, compressor: compressor, sink: sink)
    }

    /// Adds one envelope line (without its newline). Refused, naming the field, when it would
    /// not read back byte for byte.
    public mutating func append(line: UnsafeBufferPointer<UInt8>) throws {
        let ranges = try EnvelopeParquet.split(line)
        // The line is rebuilt from the values alone: whitespace around one (a line written
        // before documents were trimmed) would not come back.
        for number in 0..<8
        where line[ranges[number].lowerBound - 1] != 0x3A
            || line[ranges[number].upperBound] != (number == 7 ? 0x7D : 0x2C)
        {
            throw ParquetError(
                "\(EnvelopeParquet.keys[number]) has whitespace around it, which this format does not keep")
        }
        func field(_ number: Int) -> UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(rebasing: line[ranges[number]]) }
        for number in 0..<3 {
            let quoted = field(number)
            // Most strings hold no escape and no control character: they are their own text.
            if quoted.count >= 2, quoted.first == 0x22, quoted.last == 0x22,
                !quoted.dropFirst().dropLast().contains(where: { $0 == 0x5C || $0 < 0x20 || $0 == 0x22 })
            {
                values[number].append(bytes: quoted.dropFirst().dropLast())
                continue
            }
            guard let text = EnvelopeParquet.unescape(quoted) else {
                throw ParquetError("\(EnvelopeParquet.keys[number]) is not a string this format keeps")
            }
            var again: [UInt8] = []
            _ = text.withUnsafeBufferPointer { JSONText.appendString(utf8: $0, to: &again) }
            guard again.elementsEqual(quoted) else {
                throw ParquetError("\(EnvelopeParquet.keys[number]) is escaped in a way this format does not keep")
            }
            values[number].append(bytes: text)
        }
        let ts = field(3)
        if ts.elementsEqual("null".utf8) {
            values[3].appendNull()
        } else {
            guard ts.count > 2,
                let micros = parseTimestampMicros(UnsafeBufferPointer(rebasing: ts[1..<(ts.count - 1)])),
                ("\"" + formatRFC3339(microseconds: micros) + "\"").utf8.elementsEqual(ts)
            else {
                throw ParquetError(
                    "ts \(String(decoding: ts, as: UTF8.self)) does not come back the same as a timestamp")
            }
            values[3].append(int: micros)
        }
        for number in 4..<8 {
            let value = field(number)
            if value.elementsEqual("null".utf8) {
                values[number].appendNull()
            } else {
                values[number].append(bytes: value)
            }
        }
        if !promoted.isEmpty { promote(field(5)) }
        records += 1
        groupBytes += line.count + 1
        if groupBytes >= rowGroupBytes { try flush() }
    }

    /// The promoted fields of `after`: a value of the column's type, else null.
    private mutating func promote(_ after: UnsafeBufferPointer<UInt8>) {
        let found = EnvelopeParquet.members(after, wanted: Set(promotedKeys))
        for (index, column) in promoted.enumerated() {
            let number = 8 + index
            guard let range = found[promotedKeys[index]] else {
                values[number].appendNull()
                continue
            }
            let value = UnsafeBufferPointer(rebasing: after[range])
            let text = String(decoding: value, as: UTF8.self)
            switch column.kind {
            case .string:
                if let string = EnvelopeParquet.jsonString(value) {
                    values[number].append(bytes: string)
                } else {
                    values[number].appendNull()
                }
            case .int64:
                if let integer = Int64(text) {
                    values[number].append(int: integer)
                } else {
                    values[number].appendNull()
                }
            case .double:
                if text.first.map({ $0 == "-" || $0.isNumber }) == true, let double = Double(text), double.isFinite {
                    values[number].append(double: double)
                } else {
                    values[number].appendNull()
                }
            case .bool:
                if text == "true" || text == "false" {
                    values[number].append(bool: text == "true")
                } else {
                    values[number].appendNull()
                }
            case .timestampMicros:
                if let string = EnvelopeParquet.jsonString(value),
                    let micros = string.withUnsafeBufferPointer({ parseTimestampMicros($0) })
                {
                    values[number].append(int: micros)
                } else {
                    values[number].appendNull()
                }
            case .json:
                values[number].append(bytes: value)
            }
        }
    }

    private mutating func flush() throws {
        guard groupBytes > 0 else { return }
        try writer.writeRowGroup(values)
        for index in values.indices { values[index].removeAll() }
        groupBytes = 0
    }

    /// Writes the last row group and the footer.
    public mutating func finish() throws {
        try flush()
        try writer.finish(createdBy: "feedarchive version \(FeedArchiveVersion.current)")
    }
}
