import CSQLite
import FeedArchive

/// A replay into an SQLite file: the table `target.table` holds `key TEXT PRIMARY KEY` (the
/// envelope's key, JSON text) and `doc TEXT` (the `after` document, JSON text); the table
/// `_feedarchive_replay` holds, per replay job and partition, the position applied. Each blob's
/// changes and the positions they reach are one transaction (BEGIN IMMEDIATE, the positions
/// read inside it), so a killed replay resumes exactly where it committed, and two replays of
/// one target never apply a change twice.
public final class SQLiteReplayTarget: ReplayTarget {
    let database: SQLiteDatabase
    let table: String
    let replay: String

    public init(path: String, table: String, replay: String) throws {
        guard !table.isEmpty, table.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
            throw FeedArchiveError.usage("target.table must be letters, digits or '_', not '\(table)'")
        }
        database = try SQLiteDatabase(readWrite: path)
        self.table = table
        self.replay = replay
        try database.execute(
            """
            CREATE TABLE IF NOT EXISTS "\(table)" (key TEXT PRIMARY KEY, doc TEXT);
            CREATE TABLE IF NOT EXISTS _feedarchive_replay (replay TEXT NOT NULL, part TEXT NOT NULL, pos TEXT NOT NULL, PRIMARY KEY (replay, part));
            """)
    }

    /// A target from a replay job's `target:` (kind sqlite: `path`, `table`).
    public static func make(_ job: ReplayJob) throws -> SQLiteReplayTarget {
        let settings = try job.target.mapping("target")
        _ = settings.optional("kind")
        let path = JobConfig.resolve(
            try settings.required("path").string("target.path"), base: parentDirectory(of: job.file))
        let table = try settings.required("table").string("target.table")
        try settings.finish()
        return try SQLiteReplayTarget(path: path, table: table, replay: job.name)
    }

    public func applied() throws -> [String: String] {
        let statement = try database.prepare("SELECT part, pos FROM _feedarchive_replay WHERE replay = ?")
        defer { statement.reset() }
        statement.bind(1, text: Array(replay.utf8))
        var positions: [String: String] = [:]
        while try statement.step() {
            if let part = statement.string(0), let pos = statement.string(1) { positions[part] = pos }
        }
        return positions
    }

    public func apply(_ changes: [ReplayChange]) throws -> Int {
        try database.execute("BEGIN IMMEDIATE")
        do {
            let done = try applied()  // inside the transaction: what another replay committed counts
            let upsert = try database.prepare(
                "INSERT INTO \"\(table)\" (key, doc) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET doc = excluded.doc")
            let delete = try database.prepare("DELETE FROM \"\(table)\" WHERE key = ?")
            let truncate = try database.prepare("DELETE FROM \"\(table)\"")
            let mark = try database.prepare(
                "INSERT INTO _feedarchive_replay (replay, part, pos) VALUES (?, ?, ?) ON CONFLICT(replay, part) DO UPDATE SET pos = excluded.pos"
            )
            var count = 0
            var reached: [String: String] = [:]
            for change in changes {
                if let last = done[change.part], change.pos <= last { continue }
                switch change.op {
                case UInt8(ascii: "d"):
                    delete.bind(1, text: change.key)
                    try delete.run()
                case UInt8(ascii: "t"):
                    try truncate.run()
                default:
                    upsert.bind(1, text: change.key)
                    if let after = change.after { upsert.bind(2, text: after) } else { upsert.bindNull(2) }
                    try upsert.run()
                }
                reached[change.part] = change.pos
                count += 1
            }
            for (part, pos) in reached {
                mark.bind(1, text: Array(replay.utf8))
                mark.bind(2, text: Array(part.utf8))
                mark.bind(3, text: Array(pos.utf8))
                try mark.run()
            }
            try database.execute("COMMIT")
            return count
        } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
    }

    public func reset() throws {
        try database.execute("BEGIN IMMEDIATE")
        do {
            try database.execute("DELETE FROM \"\(table)\"")
            let statement = try database.prepare("DELETE FROM _feedarchive_replay WHERE replay = ?")
            statement.bind(1, text: Array(replay.utf8))
            try statement.run()
            try database.execute("COMMIT")
        } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
    }
}
