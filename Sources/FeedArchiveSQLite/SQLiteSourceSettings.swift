import FeedArchive

/// The `source:` block of a job with `kind: sqlite`.
public struct SQLiteSourceSettings: Sendable {
    public var path: String
    public var table: String
    /// Increasing integer column; `rowid` by default.
    public var sequenceColumn: String
    /// One JSON text column holding the document; nil turns the whole row into a JSON object.
    public var documentColumn: String?
    public var keyColumn: String?
    public var timestampColumn: String?
    /// Unit of an integer timestamp column: `s`, `ms` or `us`.
    public var timestampUnit: Int64
    /// Column whose value (`c`, `u`, `d`, or insert/update/delete) is the envelope `op`.
    public var opColumn: String?
    /// Column whose value fills `{value}` in the archive's partition path.
    public var partitionColumn: String?
    /// Where each setting came from, for errors about columns the table does not have.
    var places: [String: ConfigNode] = [:]

    /// Reads and checks the settings; relative paths are resolved against the job file's folder.
    public static func parse(_ node: ConfigNode) throws -> SQLiteSourceSettings {
        let map = try node.mapping("source")
        _ = map.optional("kind")
        let base = parentDirectory(of: node.file)
        var places: [String: ConfigNode] = [:]
        func string(_ key: String) throws -> String? {
            guard let node = map.optional(key) else { return nil }
            places[key] = node
            let value = try node.string("source.\(key)")
            if key != "path" && !isIdentifier(value) {
                throw node.error("source.\(key) must be a column or table name, not '\(value)'")
            }
            return value
        }
        guard let path = try string("path") else { throw map.node.error("source is missing the required key 'path'") }
        guard let table = try string("table") else {
            throw map.node.error("source is missing the required key 'table'")
        }
        var unit: Int64 = 1_000_000
        if let node = map.optional("timestamp_unit") {
            switch try node.string("source.timestamp_unit") {
            case "s": unit = 1_000_000
            case "ms": unit = 1000
            case "us": unit = 1
            case let other: throw node.error("source.timestamp_unit must be s, ms or us, not '\(other)'")
            }
        }
        var settings = SQLiteSourceSettings(
            path: JobConfig.resolve(path, base: base), table: table,
            sequenceColumn: try string("sequence_column") ?? "rowid",
            documentColumn: try string("document_column"), keyColumn: try string("key_column"),
            timestampColumn: try string("timestamp_column"), timestampUnit: unit, opColumn: try string("op_column"),
            partitionColumn: try string("partition_column"))
        settings.places = places
        try map.finish()
        return settings
    }

    static func isIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else { return false }
        return text.unicodeScalars.allSatisfy {
            $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)))
        }
    }

    /// An error about a setting, at its place in the job file.
    func error(_ key: String, _ message: String) -> FeedArchiveError {
        places[key]?.error(message) ?? .badJobFile(place: "source.\(key)", message: message)
    }
}
