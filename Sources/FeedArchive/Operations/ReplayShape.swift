import Foundation

/// How a record becomes a row of a replay target: the key columns and the other columns, each
/// with its type and where its value comes from.
///
/// Without `columns:` a row is the envelope's key (JSON text, column `key`) and the whole
/// `after` document (column `doc`). With `columns:` each named column takes a top-level field
/// of `after` (its own name, or `field:`), converted to its type; `key:` names the key columns
/// among them, whose values come from the envelope's `key` (an object's field, or the key
/// itself when it is one value) so that a delete finds its row.
public struct ReplayShape: Sendable, Equatable {
    public enum ColumnType: String, Sendable, CaseIterable {
        case text, integer, real, boolean, json, timestamp
    }

    public struct Column: Sendable, Equatable {
        public var name: String
        /// The top-level field of `after` (or of the key) it takes; nil: the envelope's key
        /// (a key column) or the whole document (a value column).
        public var field: String?
        public var type: ColumnType

        public init(name: String, field: String?, type: ColumnType) {
            self.name = name
            self.field = field
            self.type = type
        }
    }

    public var table: String
    public var keyColumns: [Column]
    public var valueColumns: [Column]

    /// The default: `key` (the envelope's key as JSON text) and `doc` (the `after` document).
    public static func documents(table: String) -> ReplayShape {
        ReplayShape(
            table: table, keyColumns: [Column(name: "key", field: nil, type: .text)],
            valueColumns: [Column(name: "doc", field: nil, type: .json)])
    }

    /// True when the row is the envelope's key and the whole document (no field is read).
    public var isDocuments: Bool { keyColumns.count == 1 && keyColumns[0].field == nil }

    /// Reads `table`, `key`, `columns` and `document` from a target's settings.
    public static func parse(_ settings: ConfigMapping, what: String = "target") throws -> ReplayShape {
        let tableNode = try settings.required("table")
        let table = try tableNode.string("\(what).table")
        guard isName(table) else {
            throw tableNode.error(
                "\(what).table must be letters, digits or '_' (not starting with a digit), not '\(table)'")
        }
        guard !table.lowercased().hasPrefix("_feedarchive") else {
            throw tableNode.error("\(what).table: names starting with _feedarchive are the replay's own tables")
        }
        guard let columnsNode = settings.optional("columns") else {
            if let key = settings.optional("key") {
                throw key.error(
                    "\(what).key names columns of \(what).columns; without columns the key is the envelope's key")
            }
            var shape = documents(table: table)
            if let document = settings.optional("document") {
                let name = try document.string("\(what).document")
                guard isName(name), name != "key" else {
                    throw document.error("\(what).document: '\(name)' is not a column name")
                }
                shape.valueColumns[0].name = name
            }
            return shape
        }
        let map = try columnsNode.mapping("\(what).columns")
        var columns: [Column] = []
        for name in map.keys {
            let node = try map.required(name)
            guard isName(name) else { throw node.error("\(what).columns: '\(name)' is not a column name") }
            var field = name
            let typeText: String
            if let spec = try? node.mapping("\(what).columns.\(name)") {
                typeText = try spec.required("type").string("\(what).columns.\(name).type")
                if let fieldNode = spec.optional("field") {
                    field = try fieldNode.string("\(what).columns.\(name).field")
                }
                try spec.finish()
            } else {
                typeText = try node.string("\(what).columns.\(name)")
            }
            guard let type = ColumnType(rawValue: typeText) else {
                throw node.error(
                    "\(what).columns.\(name): type '\(typeText)' is not one of \(ColumnType.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            columns.append(Column(name: name, field: field, type: type))
        }
        if columns.isEmpty { throw columnsNode.error("\(what).columns is empty") }
        let keyNode = try settings.required("key")
        let keyNames: [String]
        if let list = try? keyNode.sequence("\(what).key") {
            keyNames = try list.map { try $0.string("\(what).key") }
        } else {
            keyNames = [try keyNode.string("\(what).key")]
        }
        if keyNames.isEmpty { throw keyNode.error("\(what).key names no column") }
        var keys: [Column] = []
        for name in keyNames {
            guard let column = columns.first(where: { $0.name == name }) else {
                throw keyNode.error("\(what).key: '\(name)' is not one of \(what).columns")
            }
            if keys.contains(column) { throw keyNode.error("\(what).key: '\(name)' is named twice") }
            if column.type == .json { throw keyNode.error("\(what).key: '\(name)' is json; a key column is a value") }
            keys.append(column)
        }
        var values = columns.filter { column in !keys.contains(column) }
        if let document = settings.optional("document") {
            let name = try document.string("\(what).document")
            guard isName(name), !columns.contains(where: { $0.name == name }) else {
                throw document.error("\(what).document: '\(name)' is not a new column name")
            }
            values.append(Column(name: name, field: nil, type: .json))
        }
        let names = (keys + values).map { $0.name.lowercased() }
        if let twice = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw columnsNode.error("\(what): two columns are named '\(twice)' (names differ only by case in SQL)")
        }
        return ReplayShape(table: table, keyColumns: keys, valueColumns: values)
    }

    static func isName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }
}

/// A column's value in a replayed row.
public enum ReplayValue: Sendable, Equatable {
    case null
    case text(String)
    case integer(Int64)
    case real(Double)
    case boolean(Bool)
    /// JSON text.
    case json(ArraySlice<UInt8>)
    /// Microseconds since 1970 (UTC).
    case timestamp(Int64)
}

/// A JSON value located in text, converted to a column's type; a value that does not fit gives
/// the reason (the row then goes to the dead letters, never dropped).
enum ReplayConversion {
    static func convert(_ value: ArraySlice<UInt8>, to type: ReplayShape.ColumnType) -> Result<ReplayValue, Reason> {
        guard let first = value.first else { return .success(.null) }
        if value.elementsEqual("null".utf8) { return .success(.null) }
        switch type {
        case .json:
            return .success(.json(value))
        case .text:
            guard first == 0x22, let text = JSONScan.string(value) else { return .failure(Reason("not a string")) }
            return .success(.text(text))
        case .integer:
            guard first == 0x2D || (0x30...0x39).contains(first),
                !value.contains(where: { $0 == 0x2E || $0 == 0x65 || $0 == 0x45 }),
                let number = Int64(String(decoding: value, as: UTF8.self))
            else { return .failure(Reason("not an integer that fits 64 bits")) }
            return .success(.integer(number))
        case .real:
            guard first == 0x2D || (0x30...0x39).contains(first),
                let number = Double(String(decoding: value, as: UTF8.self)), number.isFinite
            else { return .failure(Reason("not a number")) }
            return .success(.real(number))
        case .boolean:
            if value.elementsEqual("true".utf8) { return .success(.boolean(true)) }
            if value.elementsEqual("false".utf8) { return .success(.boolean(false)) }
            return .failure(Reason("not true or false"))
        case .timestamp:
            guard first == 0x22, let text = JSONScan.string(value),
                let micros = text.utf8.withContiguousStorageIfAvailable({ parseTimestampMicros($0) }) ?? nil
            else { return .failure(Reason("not an RFC 3339 time")) }
            return .success(.timestamp(micros))
        }
    }

    struct Reason: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }
}

/// Just enough JSON reading for replay: the top-level fields of an object and the text of a
/// string (the envelope is valid JSON; this locates, it does not validate).
public enum JSONScan {
    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }

    /// The top-level fields of an object: name and the value's text; nil when `text` is not
    /// an object.
    public static func fields(_ text: ArraySlice<UInt8>) -> [(name: String, value: ArraySlice<UInt8>)]? {
        var result: [(name: String, value: ArraySlice<UInt8>)] = []
        result.reserveCapacity(8)
        var named = true
        let wellFormed = forEachField(text) { raw, value in
            // The name as written, escapes decoded only when it has some.
            let name: String?
            if raw.contains(0x5C) {
                var quoted: [UInt8] = [0x22]
                quoted.append(contentsOf: raw)
                quoted.append(0x22)
                name = string(quoted[...])
            } else {
                name = String(validating: raw, as: UTF8.self)
            }
            guard let name else {
                named = false
                return
            }
            result.append((name: name, value: value))
        }
        return wellFormed && named ? result : nil
    }

    /// Calls `body` with each top-level field of an object: its name as written (between the
    /// quotes, escapes not decoded) and its value. False when `text` is not a well-formed
    /// object. Nothing is allocated: for the hot path (transforms).
    @discardableResult
    public static func forEachField(
        _ text: ArraySlice<UInt8>, _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>) throws -> Void
    ) rethrows -> Bool {
        let base = text.startIndex
        return try text.withUnsafeBufferPointer { buffer -> Bool in
            var index = 0
            func skipSpace() { while index < buffer.count && isSpace(buffer[index]) { index += 1 } }
            skipSpace()
            guard index < buffer.count, buffer[index] == 0x7B else { return false }
            index += 1
            skipSpace()
            if index < buffer.count && buffer[index] == 0x7D { return true }
            while true {
                skipSpace()
                guard index < buffer.count, buffer[index] == 0x22,
                    let nameEnd = try? EnvelopeFields.skipValue(buffer, from: index)
                else { return false }
                let name = text[(base + index + 1)..<(base + nameEnd - 1)]
                index = nameEnd
                skipSpace()
                guard index < buffer.count, buffer[index] == 0x3A else { return false }
                index += 1
                skipSpace()
                guard var end = try? EnvelopeFields.skipValue(buffer, from: index) else { return false }
                let after = end
                while end > index && isSpace(buffer[end - 1]) { end -= 1 }
                try body(name, text[(base + index)..<(base + end)])
                index = after
                skipSpace()
                guard index < buffer.count else { return false }
                if buffer[index] == 0x2C {
                    index += 1
                    continue
                }
                return buffer[index] == 0x7D
            }
        }
    }

    /// A field name as written (between its quotes) equals `name` (UTF-8).
    public static func nameEquals(_ raw: ArraySlice<UInt8>, _ name: [UInt8]) -> Bool {
        if !raw.contains(0x5C) { return raw.elementsEqual(name) }
        var quoted: [UInt8] = [0x22]
        quoted.append(contentsOf: raw)
        quoted.append(0x22)
        return JSONScan.string(quoted[...]).map { Array($0.utf8) == name } ?? false
    }

    /// The elements of an array, nil when `text` is not an array.
    public static func elements(_ text: ArraySlice<UInt8>) -> [ArraySlice<UInt8>]? {
        let base = text.startIndex
        return text.withUnsafeBufferPointer { buffer -> [ArraySlice<UInt8>]? in
            var index = 0
            func skipSpace() { while index < buffer.count && isSpace(buffer[index]) { index += 1 } }
            skipSpace()
            guard index < buffer.count, buffer[index] == 0x5B else { return nil }
            index += 1
            var result: [ArraySlice<UInt8>] = []
            skipSpace()
            if index < buffer.count && buffer[index] == 0x5D { return result }
            while true {
                skipSpace()
                guard var end = try? EnvelopeFields.skipValue(buffer, from: index) else { return nil }
                let after = end
                while end > index && isSpace(buffer[end - 1]) { end -= 1 }
                result.append(text[(base + index)..<(base + end)])
                end = after
                index = end
                skipSpace()
                guard index < buffer.count else { return nil }
                if buffer[index] == 0x2C {
                    index += 1
                    continue
                }
                return buffer[index] == 0x5D ? result : nil
            }
        }
    }

    /// The value of a top-level field, nil when absent (or `text` is not an object).
    public static func field(_ name: String, in text: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        fields(text)?.first(where: { $0.name == name })?.value
    }

    /// The text of a JSON string (with its quotes), escapes decoded; nil when malformed.
    public static func string(_ literal: ArraySlice<UInt8>) -> String? {
        guard literal.count >= 2, literal.first == 0x22, literal.last == 0x22 else { return nil }
        let inner = literal.dropFirst().dropLast()
        if !inner.contains(0x5C) { return String(validating: inner, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(inner.count)
        var index = inner.startIndex
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= inner.endIndex else { return nil }
            return UInt32(String(decoding: inner[at..<(at + 4)], as: UTF8.self), radix: 16)
        }
        while index < inner.endIndex {
            let byte = inner[index]
            guard byte == 0x5C else {
                out.append(byte)
                index += 1
                continue
            }
            guard index + 1 < inner.endIndex else { return nil }
            let escape = inner[index + 1]
            index += 2
            switch escape {
            case 0x22, 0x5C, 0x2F: out.append(escape)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x75:
                guard var scalar = hex4(index) else { return nil }
                index += 4
                if (0xD800...0xDBFF).contains(scalar) {
                    guard index + 1 < inner.endIndex, inner[index] == 0x5C, inner[index + 1] == 0x75,
                        let low = hex4(index + 2), (0xDC00...0xDFFF).contains(low)
                    else { return nil }
                    index += 6
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let unicode = Unicode.Scalar(scalar) else { return nil }
                out.append(contentsOf: Array(String(unicode).utf8))
            default: return nil
            }
        }
        return String(validating: out, as: UTF8.self)
    }
}
