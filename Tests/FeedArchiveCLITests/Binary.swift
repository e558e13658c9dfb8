import CSQLite
import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// The built `feedarchive` executable, run as cron would run it.
enum Binary {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static var path: String {
        if let path = ProcessInfo.processInfo.environment["FEEDARCHIVE_BIN"] { return path }
        return packageRoot + "/.build/debug/feedarchive"
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary to completion.
    static func run(_ arguments: [String], environment: [String: String?] = [:]) async throws -> Result {
        let process = try start(arguments, environment: environment)
        return await process.finish()
    }

    /// A proxy in the shell that runs the tests is not for the loopback test servers.
    static let withoutProxy: [String: String?] = [
        "http_proxy": nil, "https_proxy": nil, "HTTPS_PROXY": nil, "all_proxy": nil, "ALL_PROXY": nil,
    ]

    static func start(_ arguments: [String], environment: [String: String?] = [:]) throws -> Running {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestFailure("feedarchive binary not found at \(path): run `swift build` first (scripts/test does)")
        }
        return try Running(
            executable: path, arguments: arguments, environment: withoutProxy.merging(environment) { $1 })
    }

    /// A child process started with posix_spawn, its output captured to files (no pipe can
    /// fill up and block it), reaped with waitpid (Foundation's Process can miss the exit).
    final class Running {
        let pid: pid_t
        let outFile: String
        let errFile: String

        init(executable: String, arguments: [String], environment: [String: String?] = [:]) throws {
            let id = UUID().uuidString
            outFile = NSTemporaryDirectory() + "/fa-out-" + id
            errFile = NSTemporaryDirectory() + "/fa-err-" + id
            pid = try spawn(executable, arguments, stdout: outFile, stderr: errFile, environment: environment)
        }

        func signal(_ signal: Int32) { kill(pid, signal) }

        /// A run that has not ended after this long is killed (exit 137 in the result, and a
        /// note on its stderr), so a hang fails its test instead of stalling the whole suite.
        static let watchdogSeconds = 300.0

        func finish() async -> Result {
            let pid = pid
            let fired = Flag()
            let watchdog = DispatchWorkItem {
                fired.set()
                kill(pid, SIGKILL)
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + Self.watchdogSeconds, execute: watchdog)
            let status = await reapAsync(pid)
            watchdog.cancel()
            let hung = fired.isSet
            defer {
                try? FileManager.default.removeItem(atPath: outFile)
                try? FileManager.default.removeItem(atPath: errFile)
            }
            return Result(
                status: status,
                stdout: (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "",
                stderr: ((try? String(contentsOfFile: errFile, encoding: .utf8)) ?? "")
                    + (hung ? "\n[test] killed: still running after \(Self.watchdogSeconds) s" : ""))
        }
    }
}

/// A flag set from any thread.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The shop feed writer (scripts/shopfeed.py), in a child process.
enum ShopFeed {
    static var script: String { Binary.packageRoot + "/scripts/shopfeed.py" }

    static func create(_ db: String, count: Int, wal: Bool = false, rate: Double = 1.0) throws {
        let pid = try spawn(
            "python3", [script, db, "--count", String(count), "--rate", String(rate)] + (wal ? ["--wal"] : []))
        if reap(pid) != 0 { throw TestFailure("shopfeed.py failed") }
    }

    /// Starts a writer that keeps committing small transactions until `stop`.
    static func follow(_ db: String, log: String, wal: Bool) throws -> Writer {
        Writer(
            pid: try spawn("python3", [script, db, "--follow", "--log", log, "--seed", "11"] + (wal ? ["--wal"] : [])))
    }

    struct Writer {
        let pid: pid_t
        func stop() {
            kill(pid, SIGTERM)
            _ = reap(pid)
        }
    }

    /// Every seq in the table, in order.
    static func sequences(_ db: String) throws -> [Int64] {
        var handle: OpaquePointer?
        guard sqlite3_open_v2(db, &handle, SQLITE_OPEN_READONLY, nil) == SQLITE_OK else {
            throw TestFailure("open \(db)")
        }
        defer { sqlite3_close(handle) }
        var statement: OpaquePointer?
        sqlite3_prepare_v2(handle, "SELECT seq FROM outbox ORDER BY seq", -1, &statement, nil)
        defer { sqlite3_finalize(statement) }
        var result: [Int64] = []
        while sqlite3_step(statement) == SQLITE_ROW { result.append(sqlite3_column_int64(statement, 0)) }
        return result
    }
}

/// A temp folder with a shop database and a job file for it.
final class ShopJob {
    let dir = TempDirectory("feedarchive-e2e")
    var db: String { dir.path + "/shop.db" }
    var job: String { dir.path + "/shop.yaml" }
    var jobRoot: String { dir.path + "/lake/shop" }

    init(
        compression: String = "zstd", maxRecords: Int = 50, pageSize: Int = 20, extraSource: String = "",
        start: String = "beginning"
    ) {
        dir.write(
            "shop.yaml",
            """
            name: shop
            source:
              kind: sqlite
              path: shop.db
              table: outbox
              sequence_column: seq
              document_column: payload
              key_column: order_id
              timestamp_column: created_at
            \(extraSource)archive:
              root: lake
              compression: \(compression)
            batch:
              max_records: \(maxRecords)
              page_size: \(pageSize)
            start: \(start)

            """)
    }

    /// The seq of every archived change, in archive order, read back with `feedarchive cat`.
    func archivedSequences() async throws -> [Int64] {
        let result = try await Binary.run(["cat", job])
        guard result.status == 0 else { throw TestFailure("cat failed: \(result.stderr)") }
        return result.stdout.split(separator: "\n").map { line in
            let start = line.range(of: #""pos":""#)!.upperBound
            return Int64(line[start...].prefix(20))!
        }
    }

    /// The seq of every change in every blob of every lineage (live and backfills).
    func archivedSequencesAllLineages() async throws -> [Int64] {
        var result: [Int64] = []
        for file in files(under: jobRoot + "/data") where file.hasSuffix(".zst") {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: jobRoot + "/data/" + file))
            let text = String(decoding: try Compression.zstd.makeDecoder().decodeAll(Array(bytes)), as: UTF8.self)
            for line in text.split(separator: "\n") {
                let start = line.range(of: #""pos":""#)!.upperBound
                result.append(Int64(line[start...].prefix(20))!)
            }
        }
        return result
    }

    func files(under path: String) -> [String] {
        (FileManager.default.enumerator(atPath: path)?.allObjects as? [String]) ?? []
    }

    /// Waits until a run has committed its first blob (a line in the manifest), so a signal
    /// sent next lands in the middle of the run rather than before or after it.
    func waitForFirstBlob(timeout: TimeInterval = 60) throws {
        let segment = jobRoot + "/_feedarchive/manifest/00000001.jsonl"
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: segment, encoding: .utf8), text.contains(#""kind":"blob""#) {
                return
            }
            usleep(2_000)
        }
        throw TestFailure("no blob was committed within \(Int(timeout)) s")
    }
}
