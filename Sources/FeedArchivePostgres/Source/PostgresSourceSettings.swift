import FeedArchive
import Foundation

/// The `source:` block of a job with `kind: postgres`.
public struct PostgresSourceSettings: Sendable {
    /// A host name or address, or a Unix socket folder (a path starting with `/`).
    public var host: String
    public var port: Int
    public var database: String
    public var user: String
    public var password: String?
    /// The job-file key the password came from (`source.password` or `source.password_file`),
    /// for the error that says the server refused it.
    var passwordKey = "source.password"
    /// `disable`, `prefer`, `require` (encrypted, certificate not checked) or `verify-full`.
    public var sslMode: String
    public var slot: String
    public var publication: String
    /// Tables the publication is created for by `feedarchive setup` (or `create: true`).
    public var tables: [String]
    /// Create the publication and slot on the first run when they do not exist.
    public var create: Bool
    /// WAL read per peek (bounded so a large backlog is read in steps the slot advances over).
    public var readWindow: Int64
    /// `status` warns when the slot retains more WAL than this.
    public var walWarning: Int64
    /// The longest any one connect or query may take before it counts as a lost connection.
    public var queryTimeout: Double
    /// A caught-up run whose slot holds more WAL than this writes a heartbeat (0: never).
    public var heartbeatAfter: Int64
    /// How changes are read from the slot.
    public var readMode: ReadMode = .stream

    /// `stream`: the streaming replication protocol (the walsender decodes while feedarchive
    /// encodes); `peek`: SQL `pg_logical_slot_peek_binary_changes` in LSN windows.
    public enum ReadMode: String, Sendable, CaseIterable {
        case stream, peek
    }

    /// The socket file for a Unix-socket host: PostgreSQL's `<folder>/.s.PGSQL.<port>`.
    public var socketPath: String? { host.hasPrefix("/") ? host + "/.s.PGSQL.\(port)" : nil }

    /// Where to connect, for messages (never includes the password).
    public var endpoint: String { "\(host):\(port)/\(database) as \(user)" }

    public static func parse(_ node: ConfigNode) throws -> PostgresSourceSettings {
        let map = try node.mapping("source")
        _ = map.optional("kind")
        func name(_ key: String) throws -> String? {
            guard let node = map.optional(key) else { return nil }
            let value = try node.string("source.\(key)")
            guard isName(value) else {
                throw node.error(
                    "source.\(key) must be a PostgreSQL name (letters, digits, _; at most 63 bytes), not '\(value)'")
            }
            return value
        }
        guard let database = try map.optional("database")?.string("source.database") else {
            throw map.node.error("source is missing the required key 'database'")
        }
        guard let slot = try name("slot") else {
            throw map.node.error("source is missing the required key 'slot' (the replication slot feedarchive reads)")
        }
        let publication = try name("publication") ?? slot
        var password = try map.optional("password")?.string("source.password")
        var passwordKey = "source.password"
        if let fileNode = map.optional("password_file") {
            passwordKey = "source.password_file"
            let path = JobConfig.resolve(
                try fileNode.string("source.password_file"), base: parentDirectory(of: node.file))
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw fileNode.error("cannot read the password file \(path)")
            }
            password = text.trimmingCharacters(in: .newlines)
        }
        var sslMode = "prefer"
        if let modeNode = map.optional("sslmode") {
            sslMode = try modeNode.string("source.sslmode")
            guard ["disable", "prefer", "require", "verify-full"].contains(sslMode) else {
                throw modeNode.error("source.sslmode must be disable, prefer, require or verify-full, not '\(sslMode)'")
            }
        }
        var tables: [String] = []
        if let tablesNode = map.optional("tables") {
            for item in try tablesNode.sequence("source.tables") {
                let table = try item.string("source.tables")
                guard table.split(separator: ".", omittingEmptySubsequences: false).allSatisfy({ isName(String($0)) }),
                    table.split(separator: ".").count <= 2
                else {
                    throw item.error("'\(table)' is not a table name (name or schema.name)")
                }
                tables.append(table)
            }
        }
        let host = try map.optional("host")?.string("source.host") ?? "localhost"
        let port = try map.optional("port")?.int("source.port") ?? 5432
        if !(1...65535).contains(port) { throw map.optional("port")!.error("source.port must be between 1 and 65535") }
        var readMode = ReadMode.stream
        if let modeNode = map.optional("read_mode") {
            let text = try modeNode.string("source.read_mode")
            guard let mode = ReadMode(rawValue: text) else {
                throw modeNode.error("source.read_mode must be stream or peek, not '\(text)'")
            }
            readMode = mode
        }
        var settings = PostgresSourceSettings(
            host: host, port: port, database: database,
            user: try map.optional("user")?.string("source.user") ?? "postgres", password: password,
            sslMode: host.hasPrefix("/") ? "disable" : sslMode, slot: slot, publication: publication, tables: tables,
            create: try map.optional("create")?.bool("source.create") ?? false,
            readWindow: try map.optional("read_window")?.byteSize("source.read_window") ?? 256 << 20,
            walWarning: try map.optional("wal_warning")?.byteSize("source.wal_warning") ?? 1 << 30,
            queryTimeout: try map.optional("query_timeout")?.duration("source.query_timeout") ?? 300,
            heartbeatAfter: try map.optional("heartbeat_after")?.byteSize("source.heartbeat_after") ?? 64 << 20)
        settings.readMode = readMode
        settings.passwordKey = passwordKey
        try map.finish()
        return settings
    }

    /// A plain (unquoted) PostgreSQL identifier.
    static func isName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || ("a"..."z").contains(first), text.utf8.count <= 63
        else { return false }
        return text.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }
}
