import FeedArchive
import Foundation
import Synchronization

/// A throwaway PostgreSQL 15 cluster (`scripts/pg-cluster`: initdb into a temp folder,
/// `wal_level=logical`, a Unix socket and a loopback port), started once per test process
/// and stopped when it exits. Tests talk to it with the real `psql`.
public final class PostgresTestCluster: Sendable {
    public let directory: String
    /// The Unix socket folder (a job's `source.host`).
    public let socketDirectory: String
    public let port: Int
    let script: String

    /// The cluster of this test process, started on first use.
    public static func shared() throws -> PostgresTestCluster {
        try startLock.withLock { cluster in
            if let cluster { return cluster }
            let started = try PostgresTestCluster(name: "shared")
            cluster = started
            return started
        }
    }

    static let startLock = Mutex<PostgresTestCluster?>(nil)

    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// A cluster of its own (a test that restarts the server must not disturb the others);
    /// stopped when the test process exits.
    public init(name: String) throws {
        script = Self.packageRoot + "/scripts/pg-cluster"
        directory = NSTemporaryDirectory() + "feedarchive-pg-\(getpid())-\(name)"
        port = 20000 + Int((getpid() * 7 + Int32(name.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) % 1000 })) % 30000)
        let entry = (script, directory)
        clustersToStop.withLock { $0.append(entry) }
        if !atExitRegistered.exchange(true, ordering: .relaxed) { atexit(stopClustersAtExit) }
        try? FileManager.default.removeItem(atPath: directory)
        let log = directory + ".log"
        let status = reap(try spawn(script, ["start", directory, String(port)], stdout: log, stderr: log))
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw FeedArchiveError.sourceUnavailable("scripts/pg-cluster start failed (\(status)): \(output)")
        }
        socketDirectory = directory + "/socket"
        try? FileManager.default.removeItem(atPath: log)
    }

    /// Runs SQL with `psql -v ON_ERROR_STOP=1 -tA` as the superuser; returns what it printed.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let base = NSTemporaryDirectory() + "feedarchive-psql-\(getpid())-\(UUID().uuidString.prefix(8))"
        let input = base + ".sql"
        try Data(sql.utf8).write(to: URL(fileURLWithPath: input))
        defer {
            for file in [input, base + ".out", base + ".err"] { try? FileManager.default.removeItem(atPath: file) }
        }
        let status = reap(
            try spawn(
                "psql",
                [
                    "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-h", socketDirectory, "-p", String(port), "-U",
                    "postgres", "-d", database, "-f", input,
                ],
                stdout: base + ".out", stderr: base + ".err"))
        let output = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        guard status == 0 else {
            let error = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
            throw FeedArchiveError.sourceUnavailable("psql failed (\(status)): \(error)")
        }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A new, empty database with a unique name.
    public func makeDatabase(_ prefix: String = "t") throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        try psql("CREATE DATABASE \(name)")
        return name
    }

    /// Stops the server in `mode` (`immediate` is a crash) and starts it again.
    public func restart(mode: String = "immediate") throws {
        let status = reap(try spawn(script, ["restart", directory, mode]))
        guard status == 0 else {
            throw FeedArchiveError.sourceUnavailable("scripts/pg-cluster restart failed (\(status))")
        }
    }

    /// Stops the server, copies its data folder to `copy` (a cold backup, replication slots
    /// included) and starts it again.
    public func backUp(to copy: String) throws {
        try shell(
            "\(script) stop \(directory) fast && rm -rf \(copy) && cp -a \(directory)/data \(copy) && \(script) start \(directory) >/dev/null"
        )
    }

    /// Stops the server and starts the backup at `copy` in its place in archive recovery: it
    /// replays the WAL the backup holds and begins a new timeline, as a restore to a point in
    /// time (or a failover to a standby that lagged) does.
    public func restoreOnNewTimeline(from copy: String) throws {
        try shell(
            "\(script) stop \(directory) fast && rm -rf \(directory)/data && cp -a \(copy) \(directory)/data && touch \(directory)/data/recovery.signal && echo \"restore_command = 'false'\" >> \(directory)/data/postgresql.conf && \(script) start \(directory) >/dev/null"
        )
    }

    private func shell(_ command: String) throws {
        let log = directory + ".shell.log"
        let status = reap(try spawn("/bin/sh", ["-c", command], stdout: log, stderr: log))
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: log)
        guard status == 0 else { throw FeedArchiveError.sourceUnavailable("\(command) failed (\(status)): \(output)") }
    }

    /// A job file's `source:` block for `database`, connecting over the Unix socket.
    public func sourceBlock(database: String, slot: String, tables: [String], create: Bool = true) -> String {
        """
        source:
          kind: postgres
          host: \(socketDirectory)
          port: \(port)
          database: \(database)
          user: postgres
          slot: \(slot)
          publication: \(slot)
          tables: [\(tables.joined(separator: ", "))]
          create: \(create)
          query_timeout: 15s
        """
    }
}

/// The clusters `atexit` stops.
private let clustersToStop = Mutex<[(String, String)]>([])
private let atExitRegistered = Atomic<Bool>(false)

private func stopClustersAtExit() {
    for (script, directory) in clustersToStop.withLock({ $0 }) {
        if let pid = try? spawn(script, ["stop", directory, "immediate"]) { _ = reap(pid) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
