import FeedArchive
import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// A replay into a PostgreSQL table. The table holds the shape's columns (default: `key text
/// PRIMARY KEY`, the envelope's key as JSON text, and `doc jsonb`, the `after` document);
/// `_feedarchive_replay` the positions applied per replay job and partition;
/// `_feedarchive_replay_rejected` the dead letters. Each `apply` is one transaction, serialised
/// per replay job by an advisory lock, that reads the positions, applies what comes after them
/// and moves them: a killed replay resumes exactly where it committed.
///
/// The changes of a transaction are folded per key first (the last change of a key decides its
/// row; a truncate or a change keeping unchanged TOAST fields ends a fold), then sent as one
/// `DELETE` and one `INSERT ... ON CONFLICT` whose rows are a JSON parameter
/// (`json_to_recordset`): two statements for thousands of changes. A statement the server
/// refuses for its data (SQLSTATE classes 22 and 23: a NUL in a text, a value out of range) is
/// retried change by change, each under a savepoint, and a change the server refuses goes to the
/// dead letters with the server's message.
///
/// Column types: text text, integer bigint, real double precision, boolean boolean, json jsonb,
/// timestamp timestamptz.
public final class PostgresReplayTarget: ReplayTarget {
    public let shape: ReplayShape
    let replay: String
    let connection: PostgresConnection
    let logger: Logger
    let endpoint: String
    let timeout: Double

    init(
        connection: PostgresConnection, shape: ReplayShape, replay: String, endpoint: String, timeout: Double,
        logger: Logger
    ) {
        self.connection = connection
        self.shape = shape
        self.replay = replay
        self.endpoint = endpoint
        self.timeout = timeout
        self.logger = logger
    }

    public func close() async {
        try? await connection.close()
    }

    /// A target from a replay job's `target:` (kind postgres: `host`, `port`, `database`, `user`,
    /// `password` or `password_file`, `sslmode`, `query_timeout`, as for a PostgreSQL source;
    /// `table`, and optionally `key`, `columns`, `document`).
    public static func make(_ job: ReplayJob) async throws -> PostgresReplayTarget {
        let map = try job.target.mapping("target")
        _ = map.optional("kind")
        guard let database = try map.optional("database")?.string("target.database") else {
            throw map.node.error("target is missing the required key 'database'")
        }
        var password = try map.optional("password")?.string("target.password")
        if let fileNode = map.optional("password_file") {
            let path = JobConfig.resolve(
                try fileNode.string("target.password_file"), base: parentDirectory(of: job.file))
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw fileNode.error("cannot read the password file \(path)")
            }
            password = text.trimmingCharacters(in: .newlines)
        }
        var sslMode = "prefer"
        if let modeNode = map.optional("sslmode") {
            sslMode = try modeNode.string("target.sslmode")
            guard ["disable", "prefer", "require", "verify-full"].contains(sslMode) else {
                throw modeNode.error("target.sslmode must be disable, prefer, require or verify-full, not '\(sslMode)'")
            }
        }
        let host = try map.optional("host")?.string("target.host") ?? "localhost"
        let port = try map.optional("port")?.int("target.port") ?? 5432
        if !(1...65535).contains(port) { throw map.optional("port")!.error("target.port must be between 1 and 65535") }
        let user = try map.optional("user")?.string("target.user") ?? "postgres"
        let timeout = try map.optional("query_timeout")?.duration("target.query_timeout") ?? 300
        let shape = try ReplayShape.parse(map)
        try map.finish()

        let configuration: PostgresConnection.Configuration
        if host.hasPrefix("/") {
            configuration = .init(
                unixSocketPath: host + "/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch sslMode {
            case "disable": tls = .disable
            case "verify-full": tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            default:
                var client = TLSConfiguration.makeClientConfiguration()
                client.certificateVerification = .none  // libpq's prefer/require: encrypted, not verified
                let context = try NIOSSLContext(configuration: client)
                tls = sslMode == "require" ? .require(context) : .prefer(context)
            }
            configuration = .init(
                host: host, port: port, username: user, password: password, database: database, tls: tls)
        }
        let endpoint = "\(host):\(port)/\(database) as \(user)"
        var logger = Logger(label: "feedarchive.replay")
        logger.logLevel = .critical
        let connection: PostgresConnection
        do {
            let log = logger
            connection = try await withDeadline(timeout, "connect to \(endpoint)") {
                try await PostgresConnection.connect(configuration: configuration, id: 1, logger: log)
            }
        } catch {
            throw Self.classify(error, doing: "connect to the target \(endpoint)")
        }
        let target = PostgresReplayTarget(
            connection: connection, shape: shape, replay: job.name + "/" + shape.table, endpoint: endpoint,
            timeout: timeout,
            logger: logger)
        do {
            try await target.createTables()
        } catch {
            await target.close()
            throw error
        }
        return target
    }

    static func quote(_ name: String) -> String { "\"" + name + "\"" }

    static func declaredType(_ type: ReplayShape.ColumnType) -> String {
        switch type {
        case .text: "text"
        case .integer: "bigint"
        case .real: "double precision"
        case .boolean: "boolean"
        case .json: "jsonb"
        case .timestamp: "timestamptz"
        }
    }

    var table: String { Self.quote(shape.table) }
    var columns: [ReplayShape.Column] { shape.keyColumns + shape.valueColumns }
    /// `r(a text, b jsonb, ...)`: the record type of a JSON parameter of rows.
    func recordType(_ columns: [ReplayShape.Column]) -> String {
        "r(" + columns.map { "\(Self.quote($0.name)) \(Self.declaredType($0.type))" }.joined(separator: ", ") + ")"
    }

    func createTables() async throws {
        let definitions = columns.map { "\(Self.quote($0.name)) \(Self.declaredType($0.type))" }
        let keys = shape.keyColumns.map { Self.quote($0.name) }.joined(separator: ", ")
        try await execute(
            "CREATE TABLE IF NOT EXISTS \(table) (\(definitions.joined(separator: ", ")), PRIMARY KEY (\(keys)))",
            doing: "create the target table")
        try await execute(
            "CREATE TABLE IF NOT EXISTS _feedarchive_replay (replay text NOT NULL, part text NOT NULL, pos text NOT NULL, PRIMARY KEY (replay, part))",
            doing: "create _feedarchive_replay")
        try await execute(
            "CREATE TABLE IF NOT EXISTS _feedarchive_replay_rejected (replay text NOT NULL, part text NOT NULL, pos text NOT NULL, key text, reason text NOT NULL, envelope text NOT NULL, PRIMARY KEY (replay, part, pos))",
            doing: "create _feedarchive_replay_rejected")
    }

    // MARK: - Queries

    @discardableResult
    func query(_ sql: String, _ parameters: [String] = [], doing what: String) async throws -> [PostgresRow] {
        var bindings = PostgresBindings()
        for parameter in parameters { bindings.append(parameter) }
        let query = PostgresQuery(unsafeSQL: sql, binds: bindings)
        let (connection, logger) = (connection, logger)
        do {
            return try await withDeadline(timeout, what) {
                try await connection.query(query, logger: logger).collect()
            }
        } catch {
            if let reason = Self.isDataError(error) { throw Refused(reason: reason, doing: "\(what) on \(endpoint)") }
            throw Self.classify(error, doing: "\(what) on \(endpoint)")
        }
    }

    /// The server refused a statement for its data (not for the connection).
    struct Refused: Error {
        var reason: String
        var doing: String
    }

    func execute(_ sql: String, _ parameters: [String] = [], doing what: String) async throws {
        try await query(sql, parameters, doing: what)
    }

    /// Connection trouble is temporary (exit 75: the next replay resumes); a server error about
    /// the data is a data error (65) naming the server's message.
    static func classify(_ error: any Error, doing what: String) -> FeedArchiveError {
        if let error = error as? FeedArchiveError { return error }
        if let error = error as? PSQLError {
            if let info = error.serverInfo {
                let state = info[.sqlState] ?? ""
                let message = "\(what): \(info[.message] ?? "server error") (SQLSTATE \(state))"
                if state == "28P01" || state == "28000" || state == "3D000" {
                    return .sourceRefused(
                        setting: state == "3D000" ? "target.database" : "target.password",
                        message: message, hint: "mend the replay job's target settings")
                }
                if ["08", "40", "53", "57", "58"].contains(String(state.prefix(2))) || state == "55P03" {
                    return .temporary("target unavailable: \(message)")
                }
                return .data(path: nil, message: message, hint: info[.hint] ?? info[.detail])
            }
            let underlying = error.underlying.map { ": \($0)" } ?? ""
            return .temporary("target unavailable: \(what): \(error.code)\(underlying)")
        }
        return .temporary("target unavailable: \(what): \(error)")
    }

    /// SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation): the rows, not
    /// the connection.
    static func isDataError(_ error: any Error) -> String? {
        guard let error = error as? PSQLError, let info = error.serverInfo, let state = info[.sqlState],
            state.hasPrefix("22") || state.hasPrefix("23")
        else { return nil }
        return "\(info[.message] ?? "refused by the server") (SQLSTATE \(state))"
    }

    // MARK: - ReplayTarget

    public func applied() async throws -> [String: String] {
        let rows = try await query(
            "SELECT part, pos FROM _feedarchive_replay WHERE replay = $1", [replay], doing: "read the positions applied"
        )
        var positions: [String: String] = [:]
        for row in rows {
            let (part, pos) = try row.decode((String, String).self)
            positions[part] = pos
        }
        return positions
    }

    public func apply(_ changes: [ReplayChange], expecting: [String: String]) async throws -> ReplayTally {
        do {
            return try await transaction(changes, expecting: expecting, oneByOne: false)
        } catch is Refused {
            do {
                return try await transaction(changes, expecting: expecting, oneByOne: true)
            } catch let refused as Refused {
                throw FeedArchiveError.data(path: nil, message: "\(refused.doing): \(refused.reason)")
            }
        }
    }

    func transaction(_ changes: [ReplayChange], expecting: [String: String], oneByOne: Bool) async throws
        -> ReplayTally
    {
        try await execute("BEGIN", doing: "begin")
        do {
            // One replay job applies at a time; what another committed counts.
            try await execute(
                "SELECT pg_advisory_xact_lock(hashtext('feedarchive replay ' || $1))", [replay],
                doing: "lock the replay")
            let done = try await applied()
            if let rewound = replayRewound(done: done, expecting: expecting) { throw rewound }
            var tally = ReplayTally()
            var reached: [String: String] = [:]
            var rejects: [(ReplayChange, String)] = []
            var fold = Fold(shape: shape)
            for change in changes {
                if let last = done[change.part], change.pos <= last { continue }
                reached[change.part] = change.pos
                switch change.action {
                case .pass:
                    tally.passed += 1
                    continue
                case .reject(let reason):
                    rejects.append((change, reason))
                    continue
                default: break
                }
                if oneByOne {
                    var single = Fold(shape: shape)
                    try await execute("SAVEPOINT change", doing: "savepoint")
                    do {
                        if change.action == .truncate {
                            try await execute("DELETE FROM \(table)", doing: "empty the target table")
                        } else if !change.keep.isEmpty {
                            try await upsertKeeping(change)
                        } else {
                            single.add(change)
                            try await flush(&single)
                        }
                        try await execute("RELEASE SAVEPOINT change", doing: "savepoint")
                    } catch let refused as Refused {
                        try await execute("ROLLBACK TO SAVEPOINT change", doing: "savepoint")
                        rejects.append((change, "the target refused it: \(refused.reason)"))
                        continue
                    }
                } else if change.action == .truncate {
                    try await flush(&fold)
                    try await execute("DELETE FROM \(table)", doing: "empty the target table")
                } else if !change.keep.isEmpty {
                    try await flush(&fold)
                    try await upsertKeeping(change)
                } else {
                    fold.add(change)
                }
                tally.applied += 1
            }
            try await flush(&fold)
            tally.rejected = rejects.count
            try await writeRejects(rejects)
            try await writePositions(reached)
            try await execute("COMMIT", doing: "commit")
            return tally
        } catch {
            try? await execute("ROLLBACK", doing: "roll back")
            throw error
        }
    }

    /// The changes of a transaction folded per key: the last change of a key decides its row.
    struct Fold {
        let shape: ReplayShape
        /// By key (its JSON text): the row's values, or nil for a delete.
        var rows: [[UInt8]: [ReplayValue]?] = [:]
        var keys: [[UInt8]: [ReplayValue]] = [:]

        init(shape: ReplayShape) { self.shape = shape }

        mutating func add(_ change: ReplayChange) {
            if let old = change.oldKey {
                let id = Self.id(old)
                rows[id] = .some(nil)
                keys[id] = old
            }
            let id = Self.id(change.key)
            keys[id] = change.key
            rows[id] = change.action == .delete ? .some(nil) : .some(change.key + change.values)
        }

        static func id(_ key: [ReplayValue]) -> [UInt8] {
            var out: [UInt8] = []
            PostgresReplayTarget.appendRowValues(key, to: &out)
            return out
        }

        var isEmpty: Bool { rows.isEmpty }
    }

    static func appendRowValues(_ values: [ReplayValue], to out: inout [UInt8]) {
        for value in values {
            out.append(0x1F)
            appendJSON(value, to: &out)
        }
    }

    static func appendJSON(_ value: ReplayValue, to out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .text(let text): JSONText.appendString(text, to: &out)
        case .integer(let number): JSONText.appendInt(number, to: &out)
        case .real(let number): out.append(contentsOf: "\(number)".utf8)
        case .boolean(let flag): out.append(contentsOf: (flag ? "true" : "false").utf8)
        case .json(let text): out.append(contentsOf: text)
        case .timestamp(let micros): JSONText.appendString(formatRFC3339(microseconds: micros), to: &out)
        }
    }

    /// A JSON array of row objects for `json_to_recordset`.
    func rowsJSON(_ rows: some Sequence<[ReplayValue]>, columns: [ReplayShape.Column]) -> String {
        var out: [UInt8] = [0x5B]
        var first = true
        for row in rows {
            if !first { out.append(0x2C) }
            first = false
            out.append(0x7B)
            for (index, column) in columns.enumerated() {
                if index > 0 { out.append(0x2C) }
                JSONText.appendString(column.name, to: &out)
                out.append(0x3A)
                Self.appendJSON(row[index], to: &out)
            }
            out.append(0x7D)
        }
        out.append(0x5D)
        return String(decoding: out, as: UTF8.self)
    }

    func flush(_ fold: inout Fold) async throws {
        guard !fold.isEmpty else { return }
        let deletes = fold.rows.compactMap { id, row in row == nil ? fold.keys[id] : nil }
        let upserts = fold.rows.compactMap { _, row in row ?? nil }
        fold = Fold(shape: shape)
        let keyColumns = shape.keyColumns
        let match = keyColumns.map { "t.\(Self.quote($0.name)) = r.\(Self.quote($0.name))" }.joined(separator: " AND ")
        if !deletes.isEmpty {
            try await execute(
                "DELETE FROM \(table) AS t USING json_to_recordset($1::json) AS \(recordType(keyColumns)) WHERE \(match)",
                [rowsJSON(deletes, columns: keyColumns)], doing: "delete rows")
        }
        if !upserts.isEmpty {
            try await execute(upsertSQL(keep: []), [rowsJSON(upserts, columns: columns)], doing: "upsert rows")
        }
    }

    func upsertSQL(keep: [String]) -> String {
        let names = columns.map { Self.quote($0.name) }.joined(separator: ", ")
        let keys = shape.keyColumns.map { Self.quote($0.name) }.joined(separator: ", ")
        var sets: [String] = []
        for column in shape.valueColumns {
            let name = Self.quote(column.name)
            if let field = column.field {
                if !keep.contains(field) { sets.append("\(name) = excluded.\(name)") }
            } else if keep.isEmpty {
                sets.append("\(name) = excluded.\(name)")
            } else {
                // The whole document, with the fields the source did not send taken from the row.
                let kept = keep.map { field -> String in
                    let literal = "'" + field.replacingOccurrences(of: "'", with: "''") + "'"
                    return "jsonb_build_object(\(literal), \(table).\(name) -> \(literal))"
                }
                sets.append("\(name) = excluded.\(name) || " + kept.joined(separator: " || "))
            }
        }
        let conflict = sets.isEmpty ? "DO NOTHING" : "DO UPDATE SET " + sets.joined(separator: ", ")
        return
            "INSERT INTO \(table) (\(names)) SELECT \(names) FROM json_to_recordset($1::json) AS \(recordType(columns)) ON CONFLICT (\(keys)) \(conflict)"
    }

    /// An upsert that leaves the fields the source did not send as the row has them.
    func upsertKeeping(_ change: ReplayChange) async throws {
        if let old = change.oldKey {
            var fold = Fold(shape: shape)
            fold.rows[Fold.id(old)] = .some(nil)
            fold.keys[Fold.id(old)] = old
            try await flush(&fold)
        }
        try await execute(
            upsertSQL(keep: change.keep), [rowsJSON([change.key + change.values], columns: columns)],
            doing: "upsert a row keeping unchanged fields")
    }

    func writeRejects(_ rejects: [(ReplayChange, String)]) async throws {
        guard !rejects.isEmpty else { return }
        let names: [ReplayShape.Column] = ["part", "pos", "key", "reason", "envelope"].map {
            .init(name: $0, field: $0, type: .text)
        }
        let rows = rejects.map { change, reason -> [ReplayValue] in
            [
                .text(change.part), .text(change.pos), .text(String(decoding: change.keyText, as: UTF8.self)),
                .text(reason), .text(String(decoding: change.line, as: UTF8.self)),
            ]
        }
        try await execute(
            "INSERT INTO _feedarchive_replay_rejected (replay, part, pos, key, reason, envelope) SELECT $2, r.part, r.pos, r.key, r.reason, r.envelope FROM json_to_recordset($1::json) AS r(part text, pos text, key text, reason text, envelope text) ON CONFLICT (replay, part, pos) DO UPDATE SET key = excluded.key, reason = excluded.reason, envelope = excluded.envelope",
            [rowsJSON(rows, columns: names), replay], doing: "write dead letters")
    }

    func writePositions(_ reached: [String: String]) async throws {
        guard !reached.isEmpty else { return }
        let names: [ReplayShape.Column] = [
            .init(name: "part", field: "part", type: .text), .init(name: "pos", field: "pos", type: .text),
        ]
        try await execute(
            "INSERT INTO _feedarchive_replay (replay, part, pos) SELECT $2, r.part, r.pos FROM json_to_recordset($1::json) AS r(part text, pos text) ON CONFLICT (replay, part) DO UPDATE SET pos = excluded.pos",
            [rowsJSON(reached.map { [.text($0.key), .text($0.value)] }, columns: names), replay],
            doing: "move the positions")
    }

    public func reset() async throws {
        try await execute("BEGIN", doing: "begin")
        do {
            try await execute(
                "SELECT pg_advisory_xact_lock(hashtext('feedarchive replay ' || $1))", [replay],
                doing: "lock the replay")
            let suffix = "/" + shape.table
            let others = try await query(
                "SELECT DISTINCT replay FROM _feedarchive_replay WHERE replay <> $1 AND right(replay, length($2)) = $2",
                [replay, suffix], doing: "look for other replays of the table")
            if !others.isEmpty {
                let names = try others.map { try $0.decode(String.self) }
                throw FeedArchiveError.data(
                    path: nil,
                    message:
                        "--from-scratch would empty table \(shape.table), which replay job \(names.joined(separator: ", ")) also fills: it would then skip what it applied before. Nothing was changed",
                    hint: "give each replay job its own table")
            }
            try await execute("DELETE FROM \(table)", doing: "empty the target table")
            try await execute(
                "DELETE FROM _feedarchive_replay WHERE replay = $1", [replay], doing: "forget the positions")
            try await execute(
                "DELETE FROM _feedarchive_replay_rejected WHERE replay = $1", [replay], doing: "forget the dead letters"
            )
            try await execute("COMMIT", doing: "commit")
        } catch {
            try? await execute("ROLLBACK", doing: "roll back")
            throw error
        }
    }

    public func rejectedCount() async throws -> Int {
        let rows = try await query(
            "SELECT count(*)::bigint FROM _feedarchive_replay_rejected WHERE replay = $1", [replay],
            doing: "count the dead letters")
        return Int(try rows.first?.decode(Int64.self) ?? 0)
    }
}
