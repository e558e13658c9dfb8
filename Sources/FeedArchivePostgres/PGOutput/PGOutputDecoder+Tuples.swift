import FeedArchive

/// One column value of a TupleData.
enum TupleValue {
    case null
    case unchangedToast
    case text(UnsafeRawBufferPointer)
}

/// How a change's parts are written into its envelope: the position, the `source` members,
/// and tuples as JSON objects.
extension PGOutputDecoder {
    /// The position: the commit LSN in 16 hex digits, `-`, the change's index in 8 digits.
    static func appendPosition<Sink: ByteOutput & ~Copyable>(transaction: Transaction, index: Int, to out: inout Sink) {
        out.append(contentsOf: transaction.positionPrefix)
        var digits = UInt64(0)  // 8 digits, no heap
        var rest = index
        withUnsafeMutableBytes(of: &digits) { buffer in
            var place = 7
            while place >= 0 {
                buffer[place] = UInt8(truncatingIfNeeded: rest % 10) &+ 0x30
                rest /= 10
                place -= 1
            }
            out.append(contentsOf: UnsafeRawBufferPointer(buffer))
        }
    }

    /// The members of `source`: table, xid, commit LSN, origin, unchanged TOAST columns.
    static func appendSource<Sink: ByteOutput & ~Copyable>(
        relation: Relation, transaction: Transaction, unchanged: [[UInt8]], to out: inout Sink
    ) {
        JSONText.appendLiteral(#""table":"#, to: &out)
        out.append(contentsOf: relation.qualifiedLiteral)
        JSONText.appendLiteral(#","xid":"#, to: &out)
        JSONText.appendInt(Int64(transaction.xid), to: &out)
        JSONText.appendLiteral(#","lsn":""#, to: &out)
        out.append(contentsOf: transaction.lsnText)
        out.append(0x22)
        if let origin = transaction.origin {
            JSONText.appendLiteral(#","origin":"#, to: &out)
            JSONText.appendString(origin, to: &out)
        }
        if !unchanged.isEmpty {
            JSONText.appendLiteral(#","unchanged_toast":["#, to: &out)
            for (index, name) in unchanged.enumerated() {
                if index > 0 { out.append(0x2C) }
                out.append(contentsOf: name)
            }
            out.append(0x5D)
        }
    }

    static func skipTuple(_ reader: inout MessageReader) throws {
        let count = Int(try reader.uint16("the tuple's column count"))
        for _ in 0..<count {
            switch try reader.byte("a column kind") {
            case UInt8(ascii: "n"), UInt8(ascii: "u"): continue
            case UInt8(ascii: "t"), UInt8(ascii: "b"):
                _ = try reader.slice(Int(try reader.uint32("a value length")), "a column value")
            case let other: throw PGOutputError(message: "unknown column kind \(other)")
            }
        }
    }

    /// A TupleData as a JSON object; `keysOnly` keeps the replica identity columns. An
    /// unchanged TOAST value is left out of the object and its column named in `unchanged`.
    static func appendTuple<Sink: ByteOutput & ~Copyable>(
        _ reader: inout MessageReader, relation: Relation, keysOnly: Bool, unchanged: UnsafeMutablePointer<[[UInt8]]>?,
        to out: inout Sink
    ) throws {
        let count = Int(try reader.uint16("the tuple's column count"))
        guard count <= relation.columns.count else {
            throw PGOutputError(
                message:
                    "a tuple of \(count) columns for \(relation.schema).\(relation.name), which has \(relation.columns.count)"
            )
        }
        out.append(0x7B)
        var first = true
        try relation.columns.withUnsafeBufferPointer { columns in
            try relation.nameLiterals.withUnsafeBytes { names in
                for position in 0..<count {
                    let value: TupleValue
                    switch try reader.byte("a column kind") {
                    case UInt8(ascii: "n"): value = .null
                    case UInt8(ascii: "u"): value = .unchangedToast
                    case UInt8(ascii: "t"):
                        value = .text(try reader.slice(Int(try reader.uint32("a value length")), "a column value"))
                    case UInt8(ascii: "b"):
                        throw PGOutputError(message: "binary column values are not requested and not decoded")
                    case let other: throw PGOutputError(message: "unknown column kind \(other)")
                    }
                    if keysOnly && !columns[position].isKey { continue }
                    if case .unchangedToast = value {
                        // The name without its `:`.
                        unchanged?.pointee.append(Array(names[columns[position].nameLiteral.dropLast()]))
                        if unchanged != nil { continue }
                    }
                    if !first { out.append(0x2C) }
                    first = false
                    out.append(contentsOf: UnsafeRawBufferPointer(rebasing: names[columns[position].nameLiteral]))
                    switch value {
                    case .null: JSONText.appendLiteral("null", to: &out)
                    case .unchangedToast: JSONText.appendLiteral(#"{"unchanged_toast":true}"#, to: &out)
                    case .text(let text): PGValue.appendJSON(text: text, encoding: columns[position].encoding, to: &out)
                    }
                }
            }
        }
        out.append(0x7D)
    }
}
