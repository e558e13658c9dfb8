import CSQLite
import FeedArchive

/// A replay into an SQLite file. The table `target.table` holds the shape's columns (default:
/// `key TEXT PRIMARY KEY` with the envelope's key as JSON text, and `doc TEXT` with the `after`
/// document); `_feedarchive_replay` holds, per replay job and partition, the position applied;
/// `_feedarchive_replay_rejected` the changes that could not become rows, with the reason. Each
/// blob's changes, dead letters and the positions they reach are one transaction (BEGIN
/// IMMEDIATE, the positions read inside it), so a killed replay resumes exactly where it
/// committed, and two replays of one target never apply a change twice.
///
/// Column types: text TEXT, integer INTEGER, real REAL, boolean INTEGER (0/1), json TEXT,
/// timestamp TEXT (RFC 3339, UTC, microseconds).
public final class SQLiteReplayTarget: StreamingReplayTarget {
    let database: SQLiteDatabase
    public let shape: ReplayShape
    let replay: String
    let upsert: Statement
    let delete: Statement
    let truncate: Statement
    let mark: Statement
    let reject: Statement
    /// Upserts that leave some columns as they are (unchanged TOAST), by the kept fields.
    var keeping: [[String]: Statement] = [:]

    public init(path: String, shape: ReplayShape, replay: String) throws {
        database = try SQLiteDatabase(readWrite: path)
        self.shape = shape
        self.replay = replay
        let table = Self.quote(shape.table)
        let keys = shape.keyColumns.map { Self.quote($0.name) }
        let columns = shape.keyColumns + shape.valueColumns
        let definitions = columns.map { "\(Self.quote($0.name)) \(Self.declaredType($0.type))" }
        // This connection's page cache (not the file's setting): upserts by random key touch
        // pages all over the table. A replay streams pieces into long transactions, so dirty
        // pages spill to the file mid-transaction whatever the size; 8 MiB keeps the replay
        // within `run`'s memory bound at the same speed as 32 MiB.
        try database.execute("PRAGMA cache_size = -8192")
        try database.execute(
            """
            CREATE TABLE IF NOT EXISTS \(table) (\(definitions.joined(separator: ", ")), PRIMARY KEY (\(keys.joined(separator: ", "))));
            CREATE TABLE IF NOT EXISTS _feedarchive_replay (replay TEXT NOT NULL, part TEXT NOT NULL, pos TEXT NOT NULL, PRIMARY KEY (replay, part));
            CREATE TABLE IF NOT EXISTS _feedarchive_replay_rejected (replay TEXT NOT NULL, part TEXT NOT NULL, pos TEXT NOT NULL, key TEXT, reason TEXT NOT NULL, envelope TEXT NOT NULL, PRIMARY KEY (replay, part, pos));
            """)
        upsert = try database.prepare(Self.upsertSQL(shape, keep: []))
        delete = try database.prepare(
            "DELETE FROM \(table) WHERE " + keys.map { "\($0) = ?" }.joined(separator: " AND "))
        truncate = try database.prepare("DELETE FROM \(table)")
        mark = try database.prepare(
            "INSERT INTO _feedarchive_replay (replay, part, pos) VALUES (?, ?, ?) ON CONFLICT(replay, part) DO UPDATE SET pos = excluded.pos"
        )
        reject = try database.prepare(
            "INSERT OR REPLACE INTO _feedarchive_replay_rejected (replay, part, pos, key, reason, envelope) VALUES (?, ?, ?, ?, ?, ?)"
        )
    }

    /// A target from a replay job's `target:` (kind sqlite: `path`, `table`, and optionally
    /// `key`, `columns`, `document`).
    public static func make(_ job: ReplayJob) throws -> SQLiteReplayTarget {
        let settings = try job.target.mapping("target")
        _ = settings.optional("kind")
        let path = JobConfig.resolve(
            try settings.required("path").string("target.path"), base: parentDirectory(of: job.file))
        let shape = try ReplayShape.parse(settings)
        try settings.finish()
        // Positions per replay job and table: a copy of the job aimed at another table starts
        // from nothing there.
        return try SQLiteReplayTarget(path: path, shape: shape, replay: job.name + "/" + shape.table)
    }

    static func quote(_ name: String) -> String { "\"" + name + "\"" }

    static func declaredType(_ type: ReplayShape.ColumnType) -> String {
        switch type {
        case .text, .json, .timestamp: "TEXT"
        case .integer, .boolean: "INTEGER"
        case .real: "REAL"
        }
    }

    static func upsertSQL(_ shape: ReplayShape, keep: [String]) -> String {
        let columns = (shape.keyColumns + shape.valueColumns).map { quote($0.name) }
        let keys = shape.keyColumns.map { quote($0.name) }
        var sets: [String] = []
        for column in shape.valueColumns {
            let name = quote(column.name)
            if let field = column.field {
                sets.append(keep.contains(field) ? "\(name) = \(name)" : "\(name) = excluded.\(name)")
            } else if keep.isEmpty {
                sets.append("\(name) = excluded.\(name)")
            } else {
                // The whole document, with the fields the source did not send taken from the row.
                let kept = keep.map { field in
                    let path = "'$.\"" + field.replacingOccurrences(of: "'", with: "''") + "\"'"
                    return "\(path), json(\(name) -> \(path))"
                }
                sets.append("\(name) = json_set(excluded.\(name), \(kept.joined(separator: ", ")))")
            }
        }
        let conflict = sets.isEmpty ? "DO NOTHING" : "DO UPDATE SET " + sets.joined(separator: ", ")
        return
            "INSERT INTO \(quote(shape.table)) (\(columns.joined(separator: ", "))) VALUES (\(columns.map { _ in "?" }.joined(separator: ", "))) ON CONFLICT(\(keys.joined(separator: ", "))) \(conflict)"
    }

    func bind(_ statement: Statement, _ index: Int32, _ value: ReplayValue) {
        switch value {
        case .null: statement.bindNull(index)
        case .text(let text): statement.bind(index, text: text.utf8)
        case .integer(let number): statement.bind(index, number)
        case .real(let number): statement.bind(index, real: number)
        case .boolean(let flag): statement.bind(index, flag ? 1 : 0)
        case .json(let text): statement.bind(index, text: text)
        case .timestamp(let micros): statement.bind(index, text: Self.timestampText(micros).utf8)
        }
    }

    /// RFC 3339 in UTC with exactly six fraction digits, so that the text sorts as the time.
    static func timestampText(_ micros: Int64) -> String {
        let text = formatRFC3339(microseconds: micros)
        guard text.hasSuffix("Z") else { return text }
        let body = text.dropLast()
        guard let dot = body.firstIndex(of: ".") else { return body + ".000000Z" }
        let fraction = body[body.index(after: dot)...]
        return body + String(repeating: "0", count: max(0, 6 - fraction.count)) + "Z"
    }

    public func applied() throws -> [String: String] {
        let statement = try database.prepare("SELECT part, pos FROM _feedarchive_replay WHERE replay = ?")
        defer { statement.reset() }
        statement.bind(1, text: replay.utf8)
        var positions: [String: String] = [:]
        while try statement.step() {
            if let part = statement.string(0), let pos = statement.string(1) { positions[part] = pos }
        }
        return positions
    }

    public func apply(_ changes: [ReplayChange], expecting: [String: String]) throws -> ReplayTally {
        try begin(expecting: expecting)
        do {
            let tally = try add(changes)
            try commit()
            return tally
        } catch {
            rollback()
            throw error
        }
    }

    /// The open transaction: the positions read when it began and those its changes reached.
    var open: (done: [String: String], reached: [String: String])?

    public func begin(expecting: [String: String]) throws {
        try database.execute("BEGIN IMMEDIATE")
        do {
            let done = try applied()  // inside the transaction: what another replay committed counts
            if let rewound = replayRewound(done: done, expecting: expecting) { throw rewound }
            open = (done, [:])
        } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
    }

    public func add(_ changes: [ReplayChange]) throws -> ReplayTally {
        guard var open else { preconditionFailure("add outside a transaction") }
        defer { self.open = open }
        var tally = ReplayTally()
        for change in changes {
            if let last = open.done[change.part], change.pos <= last { continue }
            open.reached[change.part] = max(open.reached[change.part] ?? change.pos, change.pos)
            if let old = change.oldKey {
                for (index, value) in old.enumerated() { bind(delete, Int32(index + 1), value) }
                try delete.run()
            }
            switch change.action {
            case .delete:
                for (index, value) in change.key.enumerated() { bind(delete, Int32(index + 1), value) }
                try delete.run()
            case .truncate:
                try truncate.run()
            case .upsert
            where !change.keep.isEmpty && shape.valueColumns.contains(where: { $0.field == nil })
                && change.keep.contains(where: { $0.contains("\"") || $0.contains("'") }):
                // A JSON path cannot name such a field: rather a dead letter than a dropped field.
                reject.bind(1, text: replay.utf8)
                reject.bind(2, text: change.part.utf8)
                reject.bind(3, text: change.pos.utf8)
                reject.bind(4, text: change.keyText)
                reject.bind(
                    5,
                    text:
                        "a field the source left out (unchanged TOAST) has a quote in its name, which an SQLite JSON path cannot name"
                        .utf8)
                reject.bind(6, text: change.line)
                try reject.run()
                tally.rejected += 1
                continue
            case .upsert:
                let statement: Statement
                if change.keep.isEmpty {
                    statement = upsert
                } else if let cached = keeping[change.keep] {
                    statement = cached
                } else {
                    statement = try database.prepare(Self.upsertSQL(shape, keep: change.keep))
                    keeping[change.keep] = statement
                }
                var index: Int32 = 1
                for value in change.key + change.values {
                    bind(statement, index, value)
                    index += 1
                }
                try statement.run()
            case .reject(let reason):
                reject.bind(1, text: replay.utf8)
                reject.bind(2, text: change.part.utf8)
                reject.bind(3, text: change.pos.utf8)
                reject.bind(4, text: change.keyText)
                reject.bind(5, text: reason.utf8)
                reject.bind(6, text: change.line)
                try reject.run()
                tally.rejected += 1
                continue
            case .pass:
                tally.passed += 1
                continue
            }
            tally.applied += 1
        }
        return tally
    }

    public func commit() throws {
        guard let open else { return }
        for (part, pos) in open.reached {
            mark.bind(1, text: replay.utf8)
            mark.bind(2, text: part.utf8)
            mark.bind(3, text: pos.utf8)
            try mark.run()
        }
        try database.execute("COMMIT")
        self.open = nil
    }

    public func rollback() {
        guard open != nil else { return }
        try? database.execute("ROLLBACK")
        open = nil
    }

    public func reset() throws {
        try database.execute("BEGIN IMMEDIATE")
        do {
            // Emptying the table under another replay job's positions would make it skip
            // everything it applied before.
            let others = try database.prepare(
                "SELECT DISTINCT replay FROM _feedarchive_replay WHERE replay <> ? AND substr(replay, -length(?)) = ?")
            others.bind(1, text: replay.utf8)
            let suffix = "/" + shape.table
            others.bind(2, text: suffix.utf8)
            others.bind(3, text: suffix.utf8)
            var names: [String] = []
            while try others.step() { if let name = others.string(0) { names.append(name) } }
            others.reset()
            if !names.isEmpty {
                throw FeedArchiveError.data(
                    path: nil,
                    message:
                        "--from-scratch would empty table \(shape.table), which replay job \(names.joined(separator: ", ")) also fills: it would then skip what it applied before. Nothing was changed",
                    hint: "give each replay job its own table")
            }
            try truncate.run()
            for table in ["_feedarchive_replay", "_feedarchive_replay_rejected"] {
                let statement = try database.prepare("DELETE FROM \(table) WHERE replay = ?")
                statement.bind(1, text: replay.utf8)
                try statement.run()
            }
            try database.execute("COMMIT")
        } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
    }

    public func rejectedCount() throws -> Int {
        let statement = try database.prepare("SELECT count(*) FROM _feedarchive_replay_rejected WHERE replay = ?")
        defer { statement.reset() }
        statement.bind(1, text: replay.utf8)
        return try statement.step() ? Int(statement.int(0)) : 0
    }
}
