import FeedArchive
import Foundation

/// A PostgreSQL LSN: 64 bits, printed `X/Y` in hex.
public struct LSN: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }

    /// Parses `16/B374D848`.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
            let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        value = high << 32 | low
    }

    public var description: String {
        var text = (UInt64(0), UInt64(0), UInt64(0))  // 24 bytes: room for `XXXXXXXX/XXXXXXXX`, no heap
        return withUnsafeMutableBytes(of: &text) { buffer in
            var count = 0
            Self.appendHex(UInt32(truncatingIfNeeded: value >> 32)) { buffer[count] = $0; count += 1 }
            buffer[count] = UInt8(ascii: "/")
            count += 1
            Self.appendHex(UInt32(truncatingIfNeeded: value)) { buffer[count] = $0; count += 1 }
            return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<count]), as: UTF8.self)
        }
    }
    /// 16 hex digits: the fixed-width form positions use, whose byte order is LSN order.
    public var fixedWidth: String {
        var bytes: [UInt8] = []
        appendFixedWidth(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// An upper-case hex digit for 0...15.
    @inline(__always) private static func hexDigit(_ value: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: value < 10 ? 0x30 + value : 0x37 + value) }

    /// `X/Y` (upper-case hex, no leading zeros), as PostgreSQL prints an LSN.
    func appendText<Sink: ByteOutput & ~Copyable>(to out: inout Sink) {
        Self.appendHex(UInt32(truncatingIfNeeded: value >> 32)) { out.append($0) }
        out.append(UInt8(ascii: "/"))
        Self.appendHex(UInt32(truncatingIfNeeded: value)) { out.append($0) }
    }

    func appendFixedWidth<Sink: ByteOutput & ~Copyable>(to out: inout Sink) {
        for shift in stride(from: 60, through: 0, by: -4) { out.append(Self.hexDigit((value >> UInt64(shift)) & 0xF)) }
    }

    /// `number` in upper-case hex without leading zeros, a digit at a time to `put`.
    @inline(__always) private static func appendHex(_ number: UInt32, _ put: (UInt8) -> Void) {
        var shift: UInt32 = 28
        while shift > 0 && (number >> shift) & 0xF == 0 { shift -= 4 }
        while true {
            put(hexDigit(UInt64((number >> shift) & 0xF)))
            if shift == 0 { break }
            shift -= 4
        }
    }
    public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.value < rhs.value }
}

/// A malformed pgoutput message: the server and this decoder disagree about the protocol.
struct PGOutputError: Error, CustomStringConvertible {
    var message: String
    var description: String { "pgoutput: \(message)" }
}

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

/// A table as a Relation message describes it. A class: a change borrows it (one reference)
/// rather than copying its arrays.
final class Relation: Sendable {
    struct Column: Sendable {
        let name: String
        /// The name as a JSON string, followed by `:`, in `Relation.nameLiterals`.
        let nameLiteral: Range<Int>
        let typeOID: UInt32
        let isKey: Bool
        /// How values become JSON, looked up once per Relation rather than once per value.
        let encoding: PGValue.Encoding
    }
    let oid: UInt32
    let schema: String
    let name: String
    /// `d` default, `n` nothing, `f` full, `i` index.
    let replicaIdentity: UInt8
    let columns: [Column]
    /// `"schema.table"` as a JSON string, ready to copy.
    let qualifiedLiteral: [UInt8]
    /// Every column's `"name":`, one after another: one buffer, so that a tuple copies names
    /// without retaining an array per column.
    let nameLiterals: [UInt8]

    init(oid: UInt32, schema: String, name: String, replicaIdentity: UInt8, columns: [(name: String, typeOID: UInt32, isKey: Bool)]) {
        self.oid = oid
        self.schema = schema
        self.name = name
        self.replicaIdentity = replicaIdentity
        var literals: [UInt8] = []
        self.columns = columns.map { column in
            let start = literals.count
            JSONText.appendString(column.name, to: &literals)
            literals.append(UInt8(ascii: ":"))
            return Column(
                name: column.name, nameLiteral: start..<literals.count, typeOID: column.typeOID, isKey: column.isKey,
                encoding: PGValue.encoding(of: column.typeOID))
        }
        self.nameLiterals = literals
        var qualified: [UInt8] = []
        JSONText.appendString(schema + "." + name, to: &qualified)
        self.qualifiedLiteral = qualified
    }
}

/// One column value of a TupleData.
enum TupleValue {
    case null
    case unchangedToast
    case text(UnsafeRawBufferPointer)
}

/// Turns pgoutput (protocol version 1) messages into envelope lines.
///
/// Positions are the transaction's commit LSN (from Begin, known before its first change, so
/// a transaction of any size streams) and an index inside it; the record that ends a
/// transaction carries the commit's end LSN as its cursor, which is what the slot is
/// advanced to. Changes of transactions that commit before `skipBefore` were archived
/// already (the server lost an advance in a crash, or a page is re-read) and are skipped.
struct PGOutputDecoder {
    struct Transaction {
        var commitLSN: LSN
        /// Microseconds since the Unix epoch.
        var timestamp: Int64
        var xid: UInt32
        var index = 0
        var skip: Bool
        var origin: String?
        /// Records of this transaction emitted so far.
        var emitted = 0
        /// The texts a transaction's records repeat, made once per transaction in one buffer:
        /// `<16 hex digits>-` (the start of every position) and the commit LSN as PostgreSQL
        /// prints it.
        private(set) var texts: [UInt8] = []

        var positionPrefix: ArraySlice<UInt8> { texts[0..<17] }
        var lsnText: ArraySlice<UInt8> { texts[17...] }

        init(commitLSN: LSN, timestamp: Int64, xid: UInt32, skip: Bool) {
            self.commitLSN = commitLSN
            self.timestamp = timestamp
            self.xid = xid
            self.skip = skip
            texts.reserveCapacity(34)  // 17 + at most 17
            commitLSN.appendFixedWidth(to: &texts)
            texts.append(UInt8(ascii: "-"))
            commitLSN.appendText(to: &texts)
        }
    }

    var relations: [UInt32: Relation] = [:]
    var envelope = EnvelopeWriter()
    var types: [UInt32: String] = [:]
    var transaction: Transaction?
    /// Transactions whose commit LSN is below this were archived already.
    var skipBefore = LSN(0)
    /// Inside the transaction at `skipBefore`, changes up to this index were returned already (a page resumed mid-transaction).
    var skipThroughIndex = -1
    /// A read resumed inside this transaction: the first transaction not skipped must be it,
    /// or its remaining changes are gone (something else advanced the slot past it).
    var mustResumeAt: LSN?

    /// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
    static let postgresEpoch: Int64 = 946_684_800_000_000

    enum Outcome {
        /// Nothing for the archive (Begin, Relation, Type, Origin, Message, skipped change).
        case none
        /// One or more envelope lines were appended to the page.
        case records
        /// The transaction ended: the last record (if the transaction had any) gets this cursor.
        case commit(end: LSN, hadRecords: Bool)
    }

    /// Decodes one message; change messages append envelopes to `page`.
    mutating func decode(_ message: UnsafeRawBufferPointer, into page: inout PageBuilder) throws -> Outcome {
        var reader = MessageReader(message)
        let type = try reader.byte("the message type")
        switch type {
        case UInt8(ascii: "B"):
            let final = LSN(try reader.uint64("Begin's final LSN"))
            let timestamp = Int64(bitPattern: try reader.uint64("Begin's commit time")) + Self.postgresEpoch
            let xid = try reader.uint32("Begin's xid")
            transaction = Transaction(commitLSN: final, timestamp: timestamp, xid: xid, skip: final < skipBefore)
            if let expected = mustResumeAt, final >= skipBefore {
                guard final == expected else {
                    throw PGOutputError(message: "the transaction committed at \(expected), read in part, was not returned again (the next one commits at \(final)): something advanced the slot past it")
                }
                mustResumeAt = nil
            }
            return .none
        case UInt8(ascii: "C"):
            _ = try reader.byte("Commit's flags")
            let commit = LSN(try reader.uint64("Commit's LSN"))
            let end = LSN(try reader.uint64("Commit's end LSN"))
            guard let current = transaction else { throw PGOutputError(message: "Commit at \(commit) without Begin") }
            transaction = nil
            // A later peek (the next window) starts again at the slot: what ended here is done.
            if end > skipBefore {
                skipBefore = end
                skipThroughIndex = -1
            }
            return .commit(end: end, hadRecords: !current.skip && current.emitted > 0)
        case UInt8(ascii: "O"):
            _ = try reader.uint64("Origin's LSN")
            transaction?.origin = try reader.cString("the origin name")
            return .none
        case UInt8(ascii: "R"):
            let oid = try reader.uint32("Relation's OID")
            let schema = try reader.cString("the relation's schema")
            let name = try reader.cString("the relation's name")
            let identity = try reader.byte("the replica identity")
            let count = Int(try reader.uint16("the column count"))
            var columns: [(name: String, typeOID: UInt32, isKey: Bool)] = []
            columns.reserveCapacity(count)
            for _ in 0..<count {
                let flags = try reader.byte("a column's flags")
                let column = try reader.cString("a column name")
                let typeOID = try reader.uint32("a column's type")
                _ = try reader.uint32("a column's type modifier")
                columns.append((column, typeOID, flags & 1 == 1))
            }
            relations[oid] = Relation(oid: oid, schema: schema, name: name, replicaIdentity: identity, columns: columns)
            return .none
        case UInt8(ascii: "Y"):
            let oid = try reader.uint32("Type's OID")
            let schema = try reader.cString("the type's schema")
            types[oid] = schema + "." + (try reader.cString("the type's name"))
            return .none
        case UInt8(ascii: "M"):
            let flags = try reader.byte("Message's flags")
            _ = try reader.uint64("Message's LSN")
            _ = try reader.cString("the message prefix")
            let length = Int(try reader.uint32("the message length"))
            _ = try reader.slice(length, "the message content")
            // Logical messages are not table changes; transactional ones count as nothing
            // inside their transaction (heartbeats are non-transactional).
            _ = flags
            return .none
        case UInt8(ascii: "I"), UInt8(ascii: "U"), UInt8(ascii: "D"):
            guard transaction != nil else { throw PGOutputError(message: "a change outside a transaction") }
            let oid = try reader.uint32("the relation OID")
            guard let relation = relations[oid] else { throw PGOutputError(message: "a change of relation \(oid) before its Relation message") }
            var old: (kind: UInt8, start: Int)?
            var new: Int?
            if type == UInt8(ascii: "I") {
                guard try reader.byte("the tuple kind") == UInt8(ascii: "N") else { throw PGOutputError(message: "Insert without a new tuple") }
                new = reader.offset
            } else {
                let kind = try reader.byte("the tuple kind")
                if kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") {
                    old = (kind, reader.offset)
                    try Self.skipTuple(&reader)
                    if type == UInt8(ascii: "U") {
                        guard try reader.byte("the new tuple kind") == UInt8(ascii: "N") else { throw PGOutputError(message: "Update without a new tuple") }
                        new = reader.offset
                    }
                } else if kind == UInt8(ascii: "N"), type == UInt8(ascii: "U") {
                    new = reader.offset
                } else {
                    throw PGOutputError(message: "unexpected tuple kind \(kind) in \(Character(UnicodeScalar(type)))")
                }
            }
            // The transaction is changed in place (a copy written back costs twice the retains).
            let index = transaction!.index
            transaction!.index += 1
            if transaction!.skip || (transaction!.commitLSN == skipBefore && index <= skipThroughIndex) { return .none }
            transaction!.emitted += 1
            let op: ChangeOp = type == UInt8(ascii: "I") ? .create : type == UInt8(ascii: "U") ? .update : .delete
            let current = transaction!
            try page.record(transaction: current, index: index) { out in
                var unchanged: [[UInt8]] = []
                try envelope.write(
                    to: &out, position: { Self.appendPosition(transaction: current, index: index, to: &$0) }, op: op,
                    timestamp: current.timestamp,
                    key: { out in
                        // The replica identity columns of the new row, or of the old one for a delete.
                        if let new {
                            var tuple = MessageReader(message)
                            tuple.offset = new
                            try Self.appendTuple(&tuple, relation: relation, keysOnly: true, unchanged: nil, to: &out)
                        } else if let old {
                            var tuple = MessageReader(message)
                            tuple.offset = old.start
                            try Self.appendTuple(&tuple, relation: relation, keysOnly: true, unchanged: nil, to: &out)
                        } else {
                            EnvelopeWriter.null(&out)
                        }
                    },
                    after: { out in
                        if let new {
                            var tuple = MessageReader(message)
                            tuple.offset = new
                            try Self.appendTuple(&tuple, relation: relation, keysOnly: false, unchanged: &unchanged, to: &out)
                        } else {
                            EnvelopeWriter.null(&out)
                        }
                    },
                    before: { out in
                        if let old, old.kind == UInt8(ascii: "O") {
                            var tuple = MessageReader(message)
                            tuple.offset = old.start
                            try Self.appendTuple(&tuple, relation: relation, keysOnly: false, unchanged: nil, to: &out)
                        } else {
                            EnvelopeWriter.null(&out)
                        }
                    },
                    source: { out in
                        Self.appendSource(relation: relation, transaction: current, unchanged: unchanged, to: &out)
                        if type == UInt8(ascii: "U"), let old, old.kind == UInt8(ascii: "K") {
                            // The key changed: keep the old one, or the old row would linger as a ghost.
                            JSONText.appendLiteral(#","old_key":"#, to: &out)
                            var tuple = MessageReader(message)
                            tuple.offset = old.start
                            try Self.appendTuple(&tuple, relation: relation, keysOnly: true, unchanged: nil, to: &out)
                        }
                    })
            }
            return .records
        case UInt8(ascii: "T"):
            guard var current = transaction else { throw PGOutputError(message: "Truncate outside a transaction") }
            let count = Int(try reader.uint32("the truncated relation count"))
            let options = try reader.byte("Truncate's options")
            var oids: [UInt32] = []
            for _ in 0..<count { oids.append(try reader.uint32("a truncated relation")) }
            defer { transaction = current }
            var emitted = false
            for oid in oids {
                guard let relation = relations[oid] else { throw PGOutputError(message: "Truncate of relation \(oid) before its Relation message") }
                let index = current.index
                current.index += 1
                if current.skip || (current.commitLSN == skipBefore && index <= skipThroughIndex) { continue }
                current.emitted += 1
                emitted = true
                let truncated = current
                try page.record(transaction: truncated, index: index) { out in
                    envelope.write(
                        to: &out, position: { Self.appendPosition(transaction: truncated, index: index, to: &$0) }, op: .truncate,
                        timestamp: truncated.timestamp, key: EnvelopeWriter.null, after: EnvelopeWriter.null,
                        before: EnvelopeWriter.null,
                        source: { out in
                            Self.appendSource(relation: relation, transaction: truncated, unchanged: [], to: &out)
                            if options & 1 != 0 { JSONText.appendLiteral(#","cascade":true"#, to: &out) }
                            if options & 2 != 0 { JSONText.appendLiteral(#","restart_identity":true"#, to: &out) }
                        })
                }
            }
            return emitted ? .records : .none
        default:
            throw PGOutputError(message: "unknown message type \(type) ('\(Character(UnicodeScalar(type)))')")
        }
    }

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
    static func appendSource<Sink: ByteOutput & ~Copyable>(relation: Relation, transaction: Transaction, unchanged: [[UInt8]], to out: inout Sink) {
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
            throw PGOutputError(message: "a tuple of \(count) columns for \(relation.schema).\(relation.name), which has \(relation.columns.count)")
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
                    case UInt8(ascii: "t"): value = .text(try reader.slice(Int(try reader.uint32("a value length")), "a column value"))
                    case UInt8(ascii: "b"): throw PGOutputError(message: "binary column values are not requested and not decoded")
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

/// Envelope lines of one page, in one shared buffer.
struct PageBuilder: ~Copyable {
    var bytes: [UInt8] = []
    var pending: [(position: Position, timestamp: Int64, range: Range<Int>, cursor: String?)] = []
    /// Where each envelope is built before it joins `bytes` in one copy.
    private var scratch = ByteWriter(capacity: 4096)

    init(capacity: Int) {
        bytes.reserveCapacity(capacity)
    }

    /// Builds in `spare`'s memory when nothing else holds it (the previous page's records are
    /// gone), sparing a fresh buffer's page faults, and in a new buffer otherwise; a spare
    /// above `keepAtMost` bytes (one page of huge rows) is let go rather than kept for good.
    init(reusing spare: inout [UInt8], capacity: Int, keepAtMost: Int) {
        swap(&bytes, &spare)
        if bytes.capacity > keepAtMost { bytes = [] }
        bytes.removeAll(keepingCapacity: true)  // keeps the memory only if no one else holds it
        bytes.reserveCapacity(capacity)
    }

    var count: Int { pending.count }

    mutating func record(transaction: PGOutputDecoder.Transaction, index: Int, _ write: (inout ByteWriter) throws -> Void) throws {
        scratch.removeAll()
        try write(&scratch)
        // The envelope starts `{"pos":"` and the 25-byte position written by appendPosition.
        let line = scratch.bytes
        let position = Position(utf8: UnsafeRawBufferPointer(rebasing: line[8..<33]))!
        let start = bytes.count
        bytes.append(contentsOf: line)
        pending.append((position, transaction.timestamp, start..<bytes.count, nil))
    }

    /// The transaction ended: its last record may end a batch.
    mutating func endTransaction(cursor: String) {
        if !pending.isEmpty { pending[pending.count - 1].cursor = cursor }
    }

    func page(resume: String?) -> FeedPage {
        FeedPage(
            records: pending.map { FeedRecord(position: $0.position, timestamp: $0.timestamp, line: bytes[$0.range], cursor: $0.cursor) },
            resume: resume)
    }
}
