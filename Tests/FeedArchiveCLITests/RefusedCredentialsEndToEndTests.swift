import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

/// Credentials or permissions a source refuses: no retry can help, so the run ends at once
/// with exit 78, names the job-file setting to fix, and commits nothing.
///
/// "At once" is measured twice: on the wall clock, against a run that succeeds (a retried
/// run would add at least the retry policy's backoff, `retryFloor`), and by the server, whose
/// log shows every attempt (the test cluster is this suite's own, so its log holds only ours).
@Suite(.serialized) struct RefusedCredentialsEndToEndTests {
    /// The least time the run's retry policy waits between its attempts, all added up.
    static let retryFloor: Double = {
        let policy = RetryPolicy()
        return (1..<policy.attempts).reduce(0.0) { total, attempt in
            total + min(policy.maxDelay, policy.initialDelay * pow(2, Double(attempt - 1))) / 2
        }
    }()

    /// Runs the binary; returns its result and how long it took.
    func timed(_ arguments: [String]) async throws -> (Binary.Result, Double) {
        let started = Date()
        let result = try await Binary.run(arguments)
        return (result, Date().timeIntervalSince(started))
    }

    /// The job file of `pg` over TCP (where the test cluster checks passwords with
    /// scram-sha-256) as `user`, with `line` added to its source block.
    func tcpJob(_ pg: PostgresJob, user: String, _ line: String, file: String, name: String = "items") throws -> String
    {
        let text = try String(contentsOfFile: pg.job, encoding: .utf8)
            .replacingOccurrences(of: "name: items", with: "name: \(name)")
            .replacingOccurrences(
                of: "host: \(pg.cluster.socketDirectory)", with: "host: 127.0.0.1\n  sslmode: disable"
            )
            .replacingOccurrences(of: "user: postgres", with: "user: \(user)\n  \(line)")
            .replacingOccurrences(of: "create: true", with: "create: false")
        return pg.dir.write(file, text)
    }

    @Test func aWrongPostgresPasswordExits78AtOnceNamingTheSetting() async throws {
        let pg = try PostgresJob(cluster: try ownCluster())
        let role = "pw_" + pg.database  // database names are unique, so is the role
        try pg.cluster.psql(
            "CREATE ROLE \(role) LOGIN REPLICATION PASSWORD 'right-one'; GRANT SELECT ON items TO \(role)",
            database: pg.database)
        let setup = try await Binary.run(["setup", pg.job])  // as the superuser, over the socket
        #expect(setup.status == 0, "\(setup.stderr)")
        try pg.cluster.psql("INSERT INTO items (name) VALUES ('a')", database: pg.database)
        // What a run that gets in takes now, on this machine, under this load (another
        // archive, from a slot of its own).
        try pg.cluster.psql(
            "SELECT pg_create_logical_replication_slot('c_\(pg.database)', 'pgoutput')", database: pg.database)
        let controlJob = try tcpJob(pg, user: role, "password: right-one", file: "control.yaml", name: "control")
        _ = pg.dir.write(
            "control.yaml",
            try String(contentsOfFile: controlJob, encoding: .utf8).replacingOccurrences(
                of: "slot: s_", with: "slot: c_"))
        let (control, controlSeconds) = try await timed(["run", controlJob])
        #expect(control.status == 0, "\(control.stderr)")

        pg.dir.write("wrong.password", "wrong-one\n")
        let cases = [
            (try tcpJob(pg, user: role, "password: wrong-one", file: "inline.yaml"), "source.password"),
            (try tcpJob(pg, user: role, "password_file: wrong.password", file: "file.yaml"), "source.password_file"),
        ]
        for (job, setting) in cases {
            let log = ServerLog(pg.cluster)
            let (result, seconds) = try await timed(["run", job])
            #expect(result.status == 78, "\(setting): \(result.stderr)")
            #expect(result.stderr.contains("\(setting):"), "\(result.stderr)")
            #expect(result.stderr.contains("28P01"), "\(result.stderr)")
            #expect(!result.stderr.contains("wrong-one"), "the password is printed: \(result.stderr)")
            #expect(
                seconds < controlSeconds + Self.retryFloor,
                "\(setting): \(seconds) s, a run that gets in takes \(controlSeconds) s")
            // The query connection and the prefetched replication stream each tried once.
            let attempts = log.lines(containing: "password authentication failed for user \"\(role)\"")
            #expect((1...2).contains(attempts.count), "\(setting): \(attempts.count) attempts")
            #expect(ServerLog.span(attempts) < 1, "\(setting): attempts over \(ServerLog.span(attempts)) s")
            #expect(!FileManager.default.fileExists(atPath: pg.jobRoot + "/_feedarchive/checkpoint.json"))
            #expect(!FileManager.default.fileExists(atPath: pg.jobRoot + "/_feedarchive/job.json"))
        }
        // The right password archives: the refusals left nothing in the way.
        let ok = try await Binary.run(["run", try tcpJob(pg, user: role, "password: right-one", file: "right.yaml")])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try await pg.archived() == (try pg.history()))
    }

    /// A role that does not exist (28000) names `source.user`.
    @Test func anUnknownPostgresRoleExits78NamingTheUser() async throws {
        let pg = try PostgresJob(cluster: try ownCluster())
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        let text = try String(contentsOfFile: pg.job, encoding: .utf8).replacingOccurrences(
            of: "user: postgres", with: "user: nobody_\(pg.database)")
        let job = pg.dir.write("nobody.yaml", text)
        let log = ServerLog(pg.cluster)
        let result = try await Binary.run(["run", job])
        #expect(result.status == 78, "\(result.stderr)")
        #expect(result.stderr.contains("source.user:") && result.stderr.contains("28000"), "\(result.stderr)")
        #expect((1...2).contains(log.lines(containing: "role \"nobody_\(pg.database)\" does not exist").count))
        #expect(!FileManager.default.fileExists(atPath: pg.jobRoot + "/_feedarchive/checkpoint.json"))
    }

    /// A role without the REPLICATION attribute cannot read a slot, in either read mode: 78,
    /// naming `source.user`, with the grant that fixes it.
    @Test func aRoleWithoutReplicationExits78WithTheGrantToMake() async throws {
        let pg = try PostgresJob(cluster: try ownCluster())
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        let role = "norepl_" + pg.database
        try pg.cluster.psql("CREATE ROLE \(role) LOGIN; GRANT SELECT ON items TO \(role)", database: pg.database)
        try pg.cluster.psql("INSERT INTO items (name) VALUES ('a'), ('b')", database: pg.database)
        for mode in ["stream", "peek"] {
            let text = try String(contentsOfFile: pg.job, encoding: .utf8)
                .replacingOccurrences(of: "user: postgres", with: "user: \(role)\n  read_mode: \(mode)")
                .replacingOccurrences(of: "create: true", with: "create: false")
            let job = pg.dir.write("\(mode).yaml", text)
            let log = ServerLog(pg.cluster)
            let result = try await Binary.run(["run", job])
            #expect(result.status == 78, "\(mode): \(result.stderr)")
            #expect(
                result.stderr.contains("source.user:") && result.stderr.contains("42501"), "\(mode): \(result.stderr)")
            #expect(result.stderr.contains("ALTER ROLE \(role) REPLICATION"), "\(mode): \(result.stderr)")
            // Stream: the prefetched stream and the read's own each tried once; peek: one peek.
            let attempts = log.lines(containing: "must be superuser or replication role")
            #expect((1...2).contains(attempts.count), "\(mode): \(attempts.count) attempts")
            #expect(ServerLog.span(attempts) < 1, "\(mode): attempts over \(ServerLog.span(attempts)) s")
        }
        // Granted, the same job archives everything.
        try pg.cluster.psql("ALTER ROLE \(role) REPLICATION")
        let granted = try await Binary.run(["run", pg.dir.path + "/stream.yaml"])
        #expect(granted.status == 0, "\(granted.stderr)")
        #expect(try await pg.archived() == (try pg.history()))
    }

    @Test func aWrongCosmosKeyExits78AtOnceNamingTheSetting() async throws {
        let server = try CosmosTestServer(ranges: 2)
        try server.control(["action": "generate", "count": 20, "seed": 1])
        let dir = TempDirectory("feedarchive-refused")
        let source = server.sourceYAML().replacingOccurrences(
            of: "key: \(CosmosTestServer.key)", with: "key_file: account.key")
        dir.write("right.key", CosmosTestServer.key + "\n")
        let control = dir.write(
            "control.yaml",
            "name: control\n\(source.replacingOccurrences(of: "account.key", with: "right.key"))\narchive:\n  root: lake\n"
        )
        let (ok, controlSeconds) = try await timed(["run", control])
        #expect(ok.status == 0, "\(ok.stderr)")

        let wrongKey = "c2VjcmV0IGtleSB3aXRoIGEgdHlwbw=="
        dir.write("account.key", wrongKey + "\n")
        let job = dir.write("orders.yaml", "name: orders\n\(source)\narchive:\n  root: lake\n")
        let (result, seconds) = try await timed(["run", job])
        #expect(result.status == 78, "\(result.stderr)")
        #expect(result.stderr.contains("source.key_file:"), "\(result.stderr)")
        #expect(result.stderr.contains("401"), "\(result.stderr)")
        #expect(!result.stderr.contains(wrongKey))
        #expect(
            seconds < controlSeconds + Self.retryFloor, "\(seconds) s, a run that gets in takes \(controlSeconds) s")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/lake/orders/_feedarchive/checkpoint.json"))
    }
}

/// This suite's own PostgreSQL cluster: its server log then holds only this suite's attempts.
private let refusedCluster = Mutex<PostgresTestCluster?>(nil)

private func ownCluster() throws -> PostgresTestCluster {
    try refusedCluster.withLock { cluster in
        if let cluster { return cluster }
        let started = try PostgresTestCluster(name: "refused")
        cluster = started
        return started
    }
}

/// The test cluster's server log from the moment this value is made.
struct ServerLog {
    let path: String
    let offset: Int

    init(_ cluster: PostgresTestCluster) {
        path = cluster.directory + "/server.log"
        offset = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }

    /// When the server logged each line since then that contains `text`.
    func lines(containing text: String) -> [Date] {
        guard let data = FileManager.default.contents(atPath: path), data.count >= offset else { return [] }
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS zzz"
        return String(decoding: data[offset...], as: UTF8.self).split(separator: "\n")
            .filter { $0.contains(text) }
            .map { format.date(from: String($0.prefix(27))) ?? .distantPast }
    }

    /// Seconds between the first and the last of `times`.
    static func span(_ times: [Date]) -> Double {
        guard let first = times.min(), let last = times.max() else { return 0 }
        return last.timeIntervalSince(first)
    }
}
