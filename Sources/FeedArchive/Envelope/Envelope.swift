/// The record envelope: one JSON object a line, UTF-8, fields in this order:
/// `{"pos","part","op","ts","key","after","before","source"}`.
///
/// Every source writes its records through `EnvelopeWriter`, the one place that knows the field
/// order, the names and how each is spelled. `version` is recorded in job.json
/// (`envelope_version`); changing what a line holds is a format change, with a new version and
/// a migration note in the changelog.
public enum Envelope {
    /// The version this build writes.
    public static let version = 1
    /// The fields, in the order they are written.
    public static let fields = ["pos", "part", "op", "ts", "key", "after", "before", "source"]
    /// The partition of a source that has only one (SQLite, PostgreSQL).
    public static let singlePartition = "0"
}

/// What a change did (the envelope's `op`), stored as the letter it is written as.
public enum ChangeOp: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// `c`: a row or document was created.
    case create = 0x63
    /// `u`: an existing row or document was changed.
    case update = 0x75
    /// `d`: a row or document was deleted.
    case delete = 0x64
    /// `r`: a row read by a snapshot, not a change.
    case read = 0x72
    /// `t`: a table was truncated.
    case truncate = 0x74
    /// `w`: a write whose kind the source cannot tell (Cosmos latest-version mode: create or replace).
    case write = 0x77

    /// The names applications write in an op column: the letters, and `insert`, `create`,
    /// `update`, `delete` in any case. Nil for anything else.
    public init?(name: String) {
        switch name.lowercased() {
        case "c", "insert", "create": self = .create
        case "u", "update": self = .update
        case "d", "delete": self = .delete
        case "r": self = .read
        case "t": self = .truncate
        case "w": self = .write
        default: return nil
        }
    }

    public var description: String { String(UnicodeScalar(rawValue)) }
}
