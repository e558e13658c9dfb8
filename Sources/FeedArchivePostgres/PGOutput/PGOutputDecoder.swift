import FeedArchive
import Foundation

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
                    throw PGOutputError(
                        message:
                            "the transaction committed at \(expected), read in part, was not returned again (the next one commits at \(final)): something advanced the slot past it"
                    )
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
            guard let relation = relations[oid] else {
                throw PGOutputError(message: "a change of relation \(oid) before its Relation message")
            }
            var old: (kind: UInt8, start: Int)?
            var new: Int?
            if type == UInt8(ascii: "I") {
                guard try reader.byte("the tuple kind") == UInt8(ascii: "N") else {
                    throw PGOutputError(message: "Insert without a new tuple")
                }
                new = reader.offset
            } else {
                let kind = try reader.byte("the tuple kind")
                if kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") {
                    old = (kind, reader.offset)
                    try Self.skipTuple(&reader)
                    if type == UInt8(ascii: "U") {
                        guard try reader.byte("the new tuple kind") == UInt8(ascii: "N") else {
                            throw PGOutputError(message: "Update without a new tuple")
                        }
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
                            try Self.appendTuple(
                                &tuple, relation: relation, keysOnly: false, unchanged: &unchanged, to: &out)
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
                guard let relation = relations[oid] else {
                    throw PGOutputError(message: "Truncate of relation \(oid) before its Relation message")
                }
                let index = current.index
                current.index += 1
                if current.skip || (current.commitLSN == skipBefore && index <= skipThroughIndex) { continue }
                current.emitted += 1
                emitted = true
                let truncated = current
                try page.record(transaction: truncated, index: index) { out in
                    envelope.write(
                        to: &out, position: { Self.appendPosition(transaction: truncated, index: index, to: &$0) },
                        op: .truncate,
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
}
