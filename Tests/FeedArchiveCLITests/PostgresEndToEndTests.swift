import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// A PostgreSQL database with a published `items` table whose every change a trigger also
/// writes to `audit` (not published): the table's history, to compare the archive with.
final class PostgresJob {
    let cluster: PostgresTestCluster
    let database: String
    let dir = TempDirectory("feedarchive-pg-e2e")
    var job: String { dir.path + "/items.yaml" }
    var jobRoot: String { dir.path + "/lake/items" }

    init(cluster: PostgresTestCluster? = nil, maxRecords: Int = 300, pageSize: Int = 100, start: String = "beginning")
        throws
    {
        self.cluster = try cluster ?? PostgresTestCluster.shared()
        database = try self.cluster.makeDatabase("e2e")
        try self.cluster.psql(
            """
            CREATE TABLE items (id bigserial PRIMARY KEY, name text, qty int);
            CREATE TABLE audit (seq bigserial PRIMARY KEY, op text, id bigint);
            CREATE FUNCTION record_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO audit (op, id) VALUES (CASE TG_OP WHEN 'INSERT' THEN 'c' WHEN 'UPDATE' THEN 'u' ELSE 'd' END, CASE TG_OP WHEN 'DELETE' THEN OLD.id ELSE NEW.id END);
              RETURN NULL;
            END $$;
            CREATE TRIGGER audit_items AFTER INSERT OR UPDATE OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION record_change();
            """, database: database)
        dir.write(
            "items.yaml",
            """
            name: items
            \(self.cluster.sourceBlock(database: database, slot: "s_" + database, tables: ["items"]))
            archive:
              root: lake
            batch:
              max_records: \(maxRecords)
              page_size: \(pageSize)
            start: \(start)

            """)
    }

    /// `transactions` transactions of varied sizes (inserts, updates, deletes; one of 3,000
    /// rows), written by `psql` in the background, with short pauses so runs overlap them.
    func startWriter(transactions: Int, seed: UInt64, pause: Double = 0.004) throws -> pid_t {
        var random = SplitMix64(state: seed)
        var sql = "SET synchronous_commit = on;\n"
        for index in 0..<transactions {
            sql += "BEGIN;\n"
            let size =
                index == transactions / 2
                ? 3000 : (random.next() % 10 == 0 ? Int(random.next() % 200) + 1 : Int(random.next() % 5) + 1)
            sql += "INSERT INTO items (name, qty) SELECT 'w\(index)', g FROM generate_series(1, \(size)) g;\n"
            if random.next() % 3 == 0 {
                sql += "UPDATE items SET qty = qty + 1 WHERE id IN (SELECT id FROM items ORDER BY random() LIMIT 3);\n"
            }
            if random.next() % 4 == 0 {
                sql += "DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY random() LIMIT 2);\n"
            }
            sql += "COMMIT;\n"
            if pause > 0 && index % 5 == 0 { sql += "SELECT pg_sleep(\(pause * 5));\n" }
        }
        let file = dir.write("writer.sql", sql)
        return try spawn(
            "psql",
            [
                "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", cluster.socketDirectory, "-p", String(cluster.port), "-U",
                "postgres", "-d", database, "-f", file,
            ],
            stdout: "/dev/null", stderr: dir.path + "/writer.err")
    }

    /// The table's history: (op, id) in commit order (one writer, so audit order is commit order).
    func history() throws -> [String] {
        try cluster.psql("SELECT op || ':' || id FROM audit ORDER BY seq", database: database).split(separator: "\n")
            .map(String.init)
    }

    /// What the live lineage archived, in feed order, as (op, id).
    func archived() async throws -> [String] {
        let result = try await Binary.run(["cat", job])
        guard result.status == 0 else { throw TestFailure("cat failed: \(result.stderr)") }
        return try result.stdout.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            let op = object?["op"] as? String ?? "?"
            let id = (object?["key"] as? [String: Any])?["id"] as? Int ?? -1
            return "\(op):\(id)"
        }
    }
}

@Suite(.serialized) struct PostgresEndToEndTests {
    /// Cron-like runs while a writer commits transactions of varied sizes; then the archive
    /// equals the table's history, and the slot was advanced to the checkpoint.
    @Test func runsWhileAWriterCommitsArchiveTheWholeHistory() async throws {
        let pg = try PostgresJob()
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        let writer = try pg.startWriter(transactions: 1000, seed: 1, pause: 0.012)  // ~12 s: several runs overlap it on a busy machine too
        var runs = 0
        while kill(writer, 0) == 0 && runs < 200 {
            // Short runs (as a busy cron's): on a slow machine one run could otherwise follow
            // the whole writer, and nothing would show that runs overlapping it hand over.
            let result = try await Binary.run(["run", pg.job, "--max-duration", "1s"])
            #expect(result.status == 0, "\(result.stderr)")
            runs += 1
            if waitpid(writer, nil, WNOHANG) == writer { break }
        }
        _ = reap(writer)
        let final = try await Binary.run(["run", pg.job])
        #expect(final.status == 0, "\(final.stderr)")
        let history = try pg.history()
        #expect(history.count > 3000)
        #expect(try await pg.archived() == history)
        let verify = try await Binary.run(["verify", pg.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")
        let status = try await Binary.run(["status", pg.job])
        // The slot was advanced exactly to the checkpoint (other databases' WAL makes the byte lag vary).
        let checkpointLSN = status.stdout.components(separatedBy: "part 0 at ").dropFirst().first?.prefix { $0 != " " }
        let confirmed = try pg.cluster.psql(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 's_\(pg.database)'")
        #expect(checkpointLSN.map(String.init) == confirmed, "\(status.stdout)")
        #expect(status.stdout.contains("slot lag") && status.stdout.contains("confirmed \(confirmed)"))
        #expect(runs >= 2)
    }

    /// A job without `archive.workers` compresses on the reading thread (the walsender needs
    /// the other core): a blob larger than a zstd worker's job is exactly the single-threaded
    /// frame of its content, which a worker's frame is not.
    @Test func withoutWorkersAJobCompressesOnItsReadingThread() async throws {
        let pg = try PostgresJob()
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        try pg.cluster.psql(
            "INSERT INTO items (name, qty) SELECT md5(g::text) || repeat('x', 200), g FROM generate_series(1, 20000) g",
            database: pg.database)
        let run = try await Binary.run(["run", pg.job])
        #expect(run.status == 0, "\(run.stderr)")
        let files = (FileManager.default.enumerator(atPath: pg.jobRoot + "/data")?.allObjects as? [String] ?? []).filter
        { $0.hasSuffix(".zst") }
        #expect(files.count == 1, "\(files)")  // one transaction: one blob, whatever max_records says
        for file in files {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: pg.jobRoot + "/data/" + file)))
            let content = try Compression.zstd.makeDecoder().decodeAll(bytes)
            #expect(content.count > 4 << 20)
            #expect(try Compression.zstd.makeEncoder(level: 3, workers: 0).encodeAll(content) == bytes)
            #expect(try Compression.zstd.makeEncoder(level: 3, workers: 1).encodeAll(content) != bytes)
        }
    }

    /// kill -9 at random moments (at least 30 times) while the writer commits: nothing lost,
    /// nothing twice, verify clean.
    @Test func killNineAtRandomMomentsLosesNothing() async throws {
        let pg = try PostgresJob(maxRecords: 120, pageSize: 50)
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        let writer = try pg.startWriter(transactions: 700, seed: 2)
        var generator = SystemRandomNumberGenerator()
        var killed = 0
        var runs = 0
        while killed < 32 && runs < 300 {
            runs += 1
            let run = try Binary.start(["run", pg.job])
            usleep(UInt32.random(in: 5_000...150_000, using: &generator))
            run.signal(SIGKILL)
            let result = await run.finish()
            if result.status == 128 + SIGKILL {
                killed += 1
            } else {
                #expect([0, 75].contains(result.status), "\(result.stderr)")
            }
        }
        _ = reap(writer)
        #expect(killed >= 30, "only \(killed) of \(runs) runs were killed mid-way")
        var final = try await Binary.run(["run", pg.job])
        if final.status == 75 {  // a killed run's peek can hold the slot for a moment
            sleep(2)
            final = try await Binary.run(["run", pg.job])
        }
        #expect(final.status == 0, "\(final.stderr)")
        let history = try pg.history()
        let archived = try await pg.archived()
        #expect(archived.count == history.count, "archived \(archived.count), history \(history.count)")
        #expect(archived == history)
        let verify = try await Binary.run(["verify", pg.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")
    }

    /// The transform steps on logical decoding's envelopes, under kill -9 while a writer
    /// commits: filters by op and by a field of `after`, a select and a keyed redaction. The
    /// archive holds the history's changes the filters keep, in order and transformed; with
    /// the per-filter counts it accounts for every change of the history; verify is clean.
    @Test func transformsTakeTheLogicalDecodingFeedUnderKills() async throws {
        let pg = try PostgresJob(maxRecords: 120, pageSize: 50)
        let job = try String(contentsOfFile: pg.job, encoding: .utf8)
        try
            (job + """
                transform:
                  - filter: {name: no-deletes, drop: {op: d}}
                  - filter: {name: small, keep: {field: after.qty, ge: 3}}
                  - select: [id, name, qty]
                  - redact: {fields: [name], key: "0123456789abcdef-postgres"}

                """).write(toFile: pg.job, atomically: true, encoding: .utf8)
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        let writer = try pg.startWriter(transactions: 300, seed: 5)
        var generator = SystemRandomNumberGenerator()
        var killed = 0
        var runs = 0
        while killed < 12 && runs < 200 {
            runs += 1
            let run = try Binary.start(["run", pg.job])
            usleep(UInt32.random(in: 5_000...150_000, using: &generator))
            run.signal(SIGKILL)
            let result = await run.finish()
            if result.status == 128 + SIGKILL {
                killed += 1
            } else {
                #expect([0, 75].contains(result.status), "\(result.stderr)")
            }
        }
        _ = reap(writer)
        var final = try await Binary.run(["run", pg.job])
        if final.status == 75 {  // a killed run's peek can hold the slot for a moment
            sleep(2)
            final = try await Binary.run(["run", pg.job])
        }
        #expect(final.status == 0, "\(final.stderr)")
        let verify = try await Binary.run(["verify", pg.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")

        let history = try pg.history()
        let cat = try await Binary.run(["cat", pg.job])
        var archived: [String] = []
        var names: [String: String] = [:]  // a source row's redacted name, by id
        for line in cat.stdout.split(separator: "\n") {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let op = try #require(object["op"] as? String)
            let after = try #require(object["after"] as? [String: Any])
            let id = try #require((object["key"] as? [String: Any])?["id"] as? Int)
            archived.append("\(op):\(id)")
            #expect(op != "d")
            #expect(Set(after.keys) == ["id", "name", "qty"], "\(line)")
            #expect((after["qty"] as? Int ?? 0) >= 3, "\(line)")
            let name = try #require(after["name"] as? String)
            #expect(name.count == 64 && name.allSatisfy(\.isHexDigit), "\(line)")
            // A row keeps its name through updates: equal values redact equally.
            if let earlier = names[String(id)] { #expect(earlier == name) }
            names[String(id)] = name
        }
        #expect(!cat.stdout.contains(#""w1"#) && !archived.isEmpty)
        // In history order: the kept changes are a subsequence of the history.
        var rest = history[...]
        for change in archived {
            guard let at = rest.firstIndex(of: change) else {
                Issue.record("\(change) is not in the history after the changes before it")
                break
            }
            rest = rest[(at + 1)...]
        }
        // The manifest's counts account for every change of the history.
        var records = 0
        var filtered: [String: Int] = [:]
        let manifest = pg.jobRoot + "/_feedarchive/manifest"
        for file in try FileManager.default.contentsOfDirectory(atPath: manifest).sorted() {
            for line in try String(contentsOfFile: manifest + "/" + file, encoding: .utf8).split(separator: "\n") {
                let entry = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                guard entry["kind"] as? String == "blob", entry["lineage"] as? String == "live" else { continue }
                records += entry["records"] as? Int ?? 0
                for (name, count) in entry["filtered"] as? [String: Int] ?? [:] { filtered[name, default: 0] += count }
            }
        }
        #expect(records == archived.count)
        #expect(filtered["no-deletes"] == history.filter { $0.hasPrefix("d:") }.count)
        #expect(records + filtered.values.reduce(0, +) == history.count, "\(records) \(filtered) \(history.count)")
        #expect((filtered["small"] ?? 0) > 0)
    }

    /// An immediate-mode restart (a crash) of the server in the middle of runs: the run backs
    /// off and reconnects, or fails and the next one continues; nothing lost, nothing twice.
    @Test func aServerCrashMidRunLosesNothing() async throws {
        let cluster = try PostgresTestCluster(name: "restart")
        let pg = try PostgresJob(cluster: cluster, maxRecords: 200, pageSize: 50)
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        let writer = try pg.startWriter(transactions: 300, seed: 3, pause: 0)
        _ = reap(writer)
        var outcomes: [Int32] = []
        for delay in [30_000, 120_000, 250_000] as [UInt32] {
            try cluster.psql(
                "INSERT INTO items (name, qty) SELECT 'more', g FROM generate_series(1, 2000) g", database: pg.database)
            let run = try Binary.start(["run", pg.job])
            usleep(delay)
            try cluster.restart(mode: "immediate")
            let result = await run.finish()
            outcomes.append(result.status)
            #expect([0, 69, 75].contains(result.status), "\(result.stderr)")
        }
        var final = try await Binary.run(["run", pg.job])
        if final.status != 0 {
            sleep(2)
            final = try await Binary.run(["run", pg.job])
        }
        #expect(final.status == 0, "\(final.stderr)")
        #expect(try await pg.archived() == (try pg.history()))
        let verify = try await Binary.run(["verify", pg.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")
    }

    /// `backfill --from beginning` for a job that started at `now`: a snapshot of the table,
    /// killed with -9 twice and resumed; then verify is clean and every row is archived.
    @Test func snapshotBackfillKilledAndResumedCoversEveryRow() async throws {
        let pg = try PostgresJob(maxRecords: 500, pageSize: 200, start: "now")
        try pg.cluster.psql(
            "INSERT INTO items (name, qty) SELECT 'old', g FROM generate_series(1, 6000) g", database: pg.database)
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        #expect(try await Binary.run(["run", pg.job]).status == 0)
        try pg.cluster.psql(
            "INSERT INTO items (name, qty) VALUES ('new', 1); UPDATE items SET qty = -1 WHERE id <= 3",
            database: pg.database)
        #expect(try await Binary.run(["run", pg.job]).status == 0)
        #expect(try await pg.archived() == ["c:6001", "u:1", "u:2", "u:3"])
        var killed = 0
        for delay in [150_000, 300_000] as [UInt32] {
            let backfill = try Binary.start(["backfill", pg.job, "--from", "beginning"])
            usleep(delay)
            backfill.signal(SIGKILL)
            if await backfill.finish().status == 128 + SIGKILL { killed += 1 }
        }
        let finished = try await Binary.run(["backfill", pg.job, "--from", "beginning"])
        #expect(finished.status == 0, "\(finished.stderr)")
        #expect(finished.stderr.contains("backfill complete"), "\(finished.stderr)")
        let verify = try await Binary.run(["verify", pg.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")
        // Every row of the table is in the snapshot, as op r with the row's columns.
        var snapshotIDs: Set<Int> = []
        for file in (FileManager.default.enumerator(atPath: pg.jobRoot + "/data")?.allObjects as? [String] ?? [])
        where file.hasSuffix(".zst") {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: pg.jobRoot + "/data/" + file))
            for line in String(decoding: try Compression.zstd.makeDecoder().decodeAll(Array(bytes)), as: UTF8.self)
                .split(separator: "\n")
            {
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                guard object?["op"] as? String == "r" else { continue }
                let after = object?["after"] as? [String: Any]
                #expect(after?["name"] is String && after?["qty"] is Int)
                if let id = (object?["key"] as? [String: Any])?["id"] as? Int { snapshotIDs.insert(id) }
            }
        }
        #expect(
            snapshotIDs == Set(1...6001),
            "snapshot holds \(snapshotIDs.count) rows (killed \(killed) times), missing \(Set(1...6001).subtracting(snapshotIDs).sorted().prefix(20)), extra \(snapshotIDs.subtracting(Set(1...6001)).sorted().prefix(5))"
        )
    }

    /// A password from `${ENV}` over TCP (scram-sha-256): it works, and it reaches no output,
    /// log, job.json, manifest or metrics file; a wrong one is exit 78 naming the setting and the user, not the secret.
    @Test func aPasswordNeverLeaves() async throws {
        let pg = try PostgresJob()
        let secret = "s3cret-\(UUID().uuidString.prefix(8))"
        try pg.cluster.psql(
            "DO $$ BEGIN CREATE ROLE archiver LOGIN REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$; ALTER ROLE archiver PASSWORD '\(secret)'; GRANT SELECT ON items TO archiver;",
            database: pg.database)
        #expect(try await Binary.run(["setup", pg.job]).status == 0)  // as the superuser
        let job = try String(contentsOfFile: pg.job, encoding: .utf8)
            .replacingOccurrences(of: "create: true", with: "create: false")
            .replacingOccurrences(
                of: "host: \(pg.cluster.socketDirectory)",
                with: "host: 127.0.0.1\n  password: ${FA_TEST_SECRET}\n  sslmode: disable"
            )
            .replacingOccurrences(of: "user: postgres", with: "user: archiver")
        let path = pg.dir.write("tcp.yaml", job)
        try pg.cluster.psql("INSERT INTO items (name) VALUES ('a'), ('b')", database: pg.database)
        setenv("FA_TEST_SECRET", secret, 1)
        defer { unsetenv("FA_TEST_SECRET") }
        let metrics = pg.dir.path + "/metrics.prom"
        let ok = try await Binary.run(["run", path, "--metrics-file", metrics])
        #expect(ok.status == 0, "\(ok.stderr)")
        setenv("FA_TEST_SECRET", "wrong-\(secret)", 1)
        let refused = try await Binary.run(["run", path, "--log-format", "json"])
        #expect(refused.status == 78, "\(refused.stderr)")
        #expect(refused.stderr.contains("archiver"), "\(refused.stderr)")
        var everything =
            ok.stdout + ok.stderr + refused.stdout + refused.stderr
            + (try String(contentsOfFile: metrics, encoding: .utf8))
        for file
            in (FileManager.default.enumerator(atPath: pg.jobRoot + "/_feedarchive")?.allObjects as? [String] ?? [])
        {
            everything += (try? String(contentsOfFile: pg.jobRoot + "/_feedarchive/" + file, encoding: .utf8)) ?? ""
        }
        #expect(everything.contains("slot_lag_bytes"))
        #expect(!everything.contains(secret))
    }

    /// Only an unpublished table changes: a caught-up run writes a heartbeat line, the slot
    /// moves past that WAL, and the changes that come later are still all archived.
    @Test func aHeartbeatMovesTheSlotPastUnpublishedWAL() async throws {
        let pg = try PostgresJob()
        let job = try String(contentsOfFile: pg.job, encoding: .utf8).replacingOccurrences(
            of: "create: true", with: "create: true\n  heartbeat_after: 1MiB")
        _ = pg.dir.write("items.yaml", job)
        #expect(try await Binary.run(["setup", pg.job]).status == 0)
        try pg.cluster.psql("INSERT INTO items (name) SELECT 'a' FROM generate_series(1, 10)", database: pg.database)
        #expect(try await Binary.run(["run", pg.job]).status == 0)
        let slot = "s_\(pg.database)"
        let before = try pg.cluster.psql(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")
        try pg.cluster.psql(
            "CREATE TABLE other (id bigserial PRIMARY KEY, pad text); INSERT INTO other (pad) SELECT repeat('p', 100) FROM generate_series(1, 30000)",
            database: pg.database)
        // Where the unpublished WAL ends (the cluster is shared: other tests write WAL too, so
        // the slot's lag behind the current WAL says nothing here).
        let written = try pg.cluster.psql("SELECT pg_current_wal_lsn()")
        let run = try await Binary.run(["run", pg.job])
        #expect(run.status == 0, "\(run.stderr)")
        let manifest = try String(contentsOfFile: pg.jobRoot + "/_feedarchive/manifest/00000001.jsonl", encoding: .utf8)
        #expect(manifest.contains(#""kind":"heartbeat""#))
        let after = try pg.cluster.psql(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")
        let past = try pg.cluster.psql(
            "SELECT confirmed_flush_lsn >= '\(written)'::pg_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")
        #expect(past == "t", "slot at \(after), was \(before); the unpublished WAL ends at \(written)")
        try pg.cluster.psql(
            "INSERT INTO items (name) SELECT 'b' FROM generate_series(1, 5); DELETE FROM items WHERE id = 1",
            database: pg.database)
        #expect(try await Binary.run(["run", pg.job]).status == 0)
        #expect(try await pg.archived() == (try pg.history()))
        let verify = try await Binary.run(["verify", pg.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")
    }

    /// A dropped slot, and a job pointed at another server: refused with 65 and the way out.
    @Test func aDroppedSlotAndAnotherServerAreRefused() async throws {
        let pg = try PostgresJob()
        let setup = try await Binary.run(["setup", pg.job])
        #expect(setup.status == 0, "\(setup.stderr)")
        try pg.cluster.psql("INSERT INTO items (name) VALUES ('a')", database: pg.database)
        let first = try await Binary.run(["run", pg.job])
        #expect(first.status == 0, "\(first.stderr)")
        // Another server: same database name, other system identifier.
        let other = try PostgresTestCluster(name: "other")
        try other.psql("CREATE DATABASE \(pg.database)")
        try other.psql("CREATE TABLE items (id bigserial PRIMARY KEY, name text, qty int)", database: pg.database)
        let moved = try String(contentsOfFile: pg.job, encoding: .utf8)
            .replacingOccurrences(of: pg.cluster.socketDirectory, with: other.socketDirectory)
            .replacingOccurrences(of: "port: \(pg.cluster.port)", with: "port: \(other.port)")
        let movedJob = pg.dir.write(
            "items-moved.yaml", moved.replacingOccurrences(of: "name: items", with: "name: items"))
        let refused = try await Binary.run(["run", movedJob])
        #expect(refused.status == 65, "\(refused.stderr)")
        #expect(
            refused.stderr.contains("system_identifier") || refused.stderr.contains("another source"),
            "\(refused.stderr)")
        // The slot dropped (and re-created by create: true): continuity cannot be proven.
        try pg.cluster.psql("SELECT pg_drop_replication_slot('s_\(pg.database)')", database: pg.database)
        let withoutCreate = pg.dir.write(
            "items-nocreate.yaml",
            try String(contentsOfFile: pg.job, encoding: .utf8).replacingOccurrences(
                of: "create: true", with: "create: false"))
        let dropped = try await Binary.run(["run", withoutCreate])
        #expect(dropped.status == 65, "\(dropped.stderr)")
        #expect(
            dropped.stderr.contains("does not exist") && dropped.stderr.contains("feedarchive epoch"),
            "\(dropped.stderr)")
        let verify = try await Binary.run(["verify", pg.job])
        #expect(verify.status == 0, "\(verify.stdout)")
    }
}
