import CSQLite
import FeedArchive

/// A read-only SQLite connection with prepared statements; errors name the database file.
final class SQLiteDatabase {
    let handle: OpaquePointer
    let path: String

    convenience init(readOnly path: String) throws {
        try self.init(path: path, flags: SQLITE_OPEN_READONLY, what: "read-only")
    }

    /// A read-write connection (a replay's target), the file created when missing.
    convenience init(readWrite path: String) throws {
        try self.init(path: path, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, what: "read-write")
    }

    private init(path: String, flags: Int32, what: String) throws {
        var handle: OpaquePointer?
        let code = sqlite3_open_v2(path, &handle, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard code == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(code))
            sqlite3_close_v2(handle)
            throw Self.unavailable(code, "cannot open \(path) \(what): \(message)")
        }
        self.handle = handle
        self.path = path
        sqlite3_busy_timeout(handle, 5000)
    }

    /// Runs statements that return no rows.
    func execute(_ sql: String) throws {
        let code = sqlite3_exec(handle, sql, nil, nil, nil)
        guard code == SQLITE_OK else { throw fail(code, sql) }
    }

    deinit { sqlite3_close_v2(handle) }

    static func unavailable(_ code: Int32, _ message: String) -> FeedArchiveError {
        let primary = code & 0xFF
        if primary == SQLITE_BUSY || primary == SQLITE_LOCKED { return .temporary(message) }
        if primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB { return .data(path: nil, message: message) }
        return .sourceUnavailable(message)
    }

    func fail(_ code: Int32, _ sql: String) -> FeedArchiveError {
        Self.unavailable(code, "\(path): \(String(cString: sqlite3_errmsg(handle))) (in: \(sql.prefix(120)))")
    }

    func prepare(_ sql: String) throws -> Statement {
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else { throw fail(code, sql) }
        return Statement(handle: statement, database: self, sql: sql)
    }

    /// Runs a query returning at most one row of one integer (nil for no row or NULL).
    func scalarInt(_ sql: String, _ bindings: [Int64] = []) throws -> Int64? {
        let statement = try prepare(sql)
        for (index, value) in bindings.enumerated() { statement.bind(Int32(index + 1), value) }
        guard try statement.step() else { return nil }
        return statement.isNull(0) ? nil : statement.int(0)
    }
}

/// A prepared statement; reset after each use so no read transaction stays open.
final class Statement {
    let handle: OpaquePointer
    unowned let database: SQLiteDatabase
    let sql: String

    init(handle: OpaquePointer, database: SQLiteDatabase, sql: String) {
        self.handle = handle
        self.database = database
        self.sql = sql
    }

    deinit { sqlite3_finalize(handle) }

    func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(handle, index, value) }

    /// Binds text (copied by SQLite); nil binds NULL.
    func bind(_ index: Int32, text value: some Collection<UInt8>) {
        func bind(_ buffer: UnsafeBufferPointer<UInt8>) {
            _ = sqlite3_bind_text(
                handle, index,
                UnsafeRawPointer(buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(
                    to: CChar.self), Int32(buffer.count), unsafeBitCast(-1, to: sqlite3_destructor_type.self))
        }
        if value.withContiguousStorageIfAvailable(bind) == nil { Array(value).withUnsafeBufferPointer(bind) }
    }

    func bind(_ index: Int32, real value: Double) { sqlite3_bind_double(handle, index, value) }

    func bindNull(_ index: Int32) { sqlite3_bind_null(handle, index) }

    /// Runs a statement that returns no rows, then resets it.
    func run() throws {
        defer { reset() }
        _ = try step()
    }

    /// Next row: true when there is one.
    func step() throws -> Bool {
        let code = sqlite3_step(handle)
        if code == SQLITE_ROW { return true }
        if code == SQLITE_DONE { return false }
        let error = database.fail(code, sql)
        sqlite3_reset(handle)
        throw error
    }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func type(_ column: Int32) -> Int32 { sqlite3_column_type(handle, column) }
    func isNull(_ column: Int32) -> Bool { type(column) == SQLITE_NULL }
    func int(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }

    /// The column's text as bytes, valid until the next step or reset.
    func text(_ column: Int32) -> UnsafeBufferPointer<UInt8> {
        guard let pointer = sqlite3_column_text(handle, column) else {
            return UnsafeBufferPointer(start: nil, count: 0)
        }
        return UnsafeBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(handle, column)))
    }

    func string(_ column: Int32) -> String? {
        isNull(column) ? nil : String(decoding: text(column), as: UTF8.self)
    }
}
