import FeedArchive

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

    init(
        oid: UInt32, schema: String, name: String, replicaIdentity: UInt8,
        columns: [(name: String, typeOID: UInt32, isKey: Bool)]
    ) {
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
