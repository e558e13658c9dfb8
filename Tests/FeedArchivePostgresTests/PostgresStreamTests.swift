import FeedArchive
import FeedArchivePostgres
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

/// `read_mode: stream` (the default): the replication protocol client, its bounds, its
/// acknowledgements and its failures; and that it archives what `read_mode: peek` archives.
@Suite(.serialized) struct PostgresStreamTests {
    @Test func peekModePassesTheConformanceSuite() async throws {
        let checks = try await FeedSourceConformance.run(try await PostgresConformanceFeed(extra: "read_mode: peek"))
        #expect(checks.contains("resume-exact") && checks.count >= 15)
    }

    /// The same changes read in both modes give the same pages: lines, positions, cursors,
    /// resume cursors (a transaction larger than a page included), so archives are the same bytes.
    @Test func bothModesGiveByteIdenticalRecords() async throws {
        let fixture = try PostgresFixture(
            table: """
                CREATE TABLE items (id serial PRIMARY KEY, name text, qty int);
                CREATE TABLE audit (k text PRIMARY KEY, v text);
                ALTER TABLE audit REPLICA IDENTITY FULL;
                CREATE TABLE unpublished (id int);
                """, tables: ["items", "audit"])
        let stream = try fixture.source()
        let peek = try fixture.source("read_mode: peek\nread_window: 256KB")
        defer {
            Task {
                await stream.close()
                await peek.close()
            }
        }
        #expect(stream.settings.readMode == .stream && peek.settings.readMode == .peek)
        try await stream.setup()
        let start = try await stream.resolve(.beginning)
        try fixture.sql(
            """
            INSERT INTO items (name, qty) VALUES ('a', 1);
            BEGIN; INSERT INTO items (name, qty) VALUES ('b', 2); INSERT INTO unpublished VALUES (1); UPDATE items SET qty = 3 WHERE name = 'a'; COMMIT;
            INSERT INTO unpublished SELECT g FROM generate_series(1, 1000) g;
            INSERT INTO items (name, qty) SELECT 'n' || g, g FROM generate_series(1, 3000) g;
            INSERT INTO audit VALUES ('k', 'v'); UPDATE audit SET v = 'w'; DELETE FROM audit;
            UPDATE items SET id = id + 100000 WHERE id = 1;
            DELETE FROM items WHERE id < 50;
            TRUNCATE audit;
            """)
        for pageSize in [1000, 170] {
            let streamed = try await fixture.readAll(stream, from: start, pageSize: pageSize)
            await stream.close()  // nothing was acknowledged: the stream holds the slot until closed
            let peeked = try await fixture.readAll(peek, from: start, pageSize: pageSize)
            #expect(streamed.records.count == 3056)
            #expect(streamed.pages.count == peeked.pages.count)
            for (one, other) in zip(streamed.pages, peeked.pages) {
                #expect(one.resume == other.resume)
                #expect(one.records.map { Array($0.line) } == other.records.map { Array($0.line) })
                #expect(one.records.map(\.position) == other.records.map(\.position))
                #expect(one.records.map(\.cursor) == other.records.map(\.cursor))
                #expect(one.records.map(\.timestamp) == other.records.map(\.timestamp))
            }
        }
    }

    /// A run with nothing new for the publication (only an unpublished table changed) ends at
    /// once: the walsender's keepalive shows the head was passed.
    @Test func nothingNewEndsQuickly() async throws {
        let fixture = try PostgresFixture(
            table: "CREATE TABLE items (id serial PRIMARY KEY, name text, qty int); CREATE TABLE other (id int)")
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.now)
        try fixture.sql("INSERT INTO other SELECT g FROM generate_series(1, 5000) g")
        let head = try await source.head(for: start)["0"]!
        #expect(LSN(head)! > LSN(start.cursors["0"]!)!)
        let clock = ContinuousClock()
        let began = clock.now
        let page = try await source.readPage(partition: "0", after: start.cursors["0"]!, through: head, maxRecords: 100)
        let took = clock.now - began
        #expect(page.records.isEmpty)
        #expect(took < .seconds(2), "took \(took)")
        // Caught up: the stream was closed, so the slot is free (the heartbeat's peek needs it).
        let active = try fixture.sql("SELECT active FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
        #expect(active == "f")
    }

    /// A head that is a cursor (verify --against-source re-reads an archived range): the read
    /// stops exactly after the transaction that ends there, in both modes.
    @Test func aCursorAsHeadEndsTheReadThere() async throws {
        let fixture = try PostgresFixture()
        let source = try fixture.source()
        let peek = try fixture.source("read_mode: peek")
        defer {
            Task {
                await source.close()
                await peek.close()
            }
        }
        try await source.setup()
        let start = try await source.resolve(.now)
        try fixture.sql(String(repeating: "INSERT INTO items (name) VALUES ('x'), ('y');\n", count: 5))
        let all = try await fixture.readAll(source, from: start).records
        await source.close()
        #expect(all.count == 10)
        let end = try #require(all[3].cursor)
        for reader in [source, peek] {
            var cursor = start.cursors["0"]!
            var records: [FeedRecord] = []
            while true {
                let page = try await reader.readPage(partition: "0", after: cursor, through: end, maxRecords: 3)
                if page.records.isEmpty { break }
                records += page.records
                cursor = page.next!
            }
            await reader.close()  // nothing was acknowledged: a stream holds the slot until closed
            #expect(records.map(\.position) == all.prefix(4).map(\.position), "\(reader.settings.readMode)")
        }
    }

    /// Transactions that commit after the head (a writer keeps going) are not waited for.
    @Test func aWriterThatKeepsGoingDoesNotHoldTheRun() async throws {
        let fixture = try PostgresFixture()
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.now)
        try fixture.sql("INSERT INTO items (name) SELECT 'before' FROM generate_series(1, 10) g")
        let writer = try spawn(
            "psql",
            [
                "-X", "-q", "-h", fixture.cluster.socketDirectory, "-p", String(fixture.cluster.port), "-U", "postgres",
                "-d", fixture.database, "-c",
                "DO $$ BEGIN FOR i IN 1..600 LOOP INSERT INTO items (name) VALUES ('after'); COMMIT; PERFORM pg_sleep(0.01); END LOOP; END $$",
            ],
            stdout: "/dev/null", stderr: "/dev/null")
        defer {
            kill(writer, SIGTERM)
            _ = reap(writer)
        }
        usleep(300_000)
        let clock = ContinuousClock()
        let began = clock.now
        let (records, _) = try await fixture.readAll(source, from: start, pageSize: 50)
        #expect(clock.now - began < .seconds(3))
        #expect(records.count >= 10)
        let names = try records.map { try envelope($0)["after"] as? [String: Any] }.map { $0?["name"] as? String }
        #expect(names.prefix(10).allSatisfy { $0 == "before" })
    }

    /// While the stream is open the slot is active (`pg_replication_slot_advance` would fail):
    /// an acknowledgement goes out as a status update and the walsender confirms it; at the
    /// head the stream ends, and later acknowledgements use SQL.
    @Test func acknowledgementsReachTheSlotWhileStreaming() async throws {
        let fixture = try PostgresFixture()
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.beginning)
        try fixture.sql(String(repeating: "INSERT INTO items (name) VALUES ('x');\n", count: 400))
        let head = try await source.head(for: start)["0"]!
        let first = try await source.readPage(partition: "0", after: start.cursors["0"]!, through: head, maxRecords: 50)
        let cursor = try #require(first.records.last?.cursor)
        #expect(try fixture.sql("SELECT active FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'") == "t")
        try await source.acknowledge(start.advancing("0", to: cursor))
        var confirmed = ""
        for _ in 0..<50 {
            confirmed = try fixture.sql(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
            if confirmed == cursor { break }
            usleep(100_000)
        }
        #expect(confirmed == cursor)
        // Read to the head, acknowledge the end: the stream is closed by then, SQL advances.
        var next = first.next!
        while true {
            let page = try await source.readPage(partition: "0", after: next, through: head, maxRecords: 100)
            if page.records.isEmpty { break }
            next = page.next!
        }
        try await source.acknowledge(start.advancing("0", to: next))
        #expect(
            try fixture.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
                == next)
        // An acknowledgement in a stream that is closed by `close()` (a run stopped early).
        try fixture.sql(String(repeating: "INSERT INTO items (name) VALUES ('y');\n", count: 300))
        let later = start.advancing("0", to: next)
        let head2 = try await source.head(for: later)["0"]!
        let page = try await source.readPage(partition: "0", after: next, through: head2, maxRecords: 1)
        #expect(page.records.count == 1)
        try await source.acknowledge(later.advancing("0", to: page.records[0].cursor!))
        await source.close()
        #expect(
            try fixture.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
                == page.records[0].cursor!)
        #expect(try fixture.sql("SELECT active FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'") == "f")
    }

    /// `prefetch` opens the stream from the slot's confirmed position before the run knows its
    /// cursor; the first read adopts it (the same walsender), skips by position what the
    /// cursor has passed (here a transaction the slot was never told about), and reads the same
    /// bytes a stream opened at the cursor reads. An acknowledgement before the read goes
    /// through it; `close` releases the slot.
    @Test func aPrefetchedStreamIsAdoptedAndSkipsWhatTheCursorPassed() async throws {
        let fixture = try PostgresFixture()
        let first = try fixture.source()
        try await first.setup()
        let start = try await first.resolve(.now)
        try fixture.sql("INSERT INTO items (name, qty) VALUES ('a', 1)")
        try fixture.sql("INSERT INTO items (name, qty) VALUES ('b', 2), ('c', 3)")
        let all = try await fixture.readAll(first, from: start).records
        await first.close()  // nothing acknowledged: the slot still holds both transactions
        #expect(all.count == 3)
        let afterA = try #require(all[0].cursor)

        let source = try fixture.source()
        defer { Task { await source.close() } }
        func activePID() throws -> String {
            try fixture.sql(
                "SELECT coalesce(active_pid::text, '') FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
        }
        /// The walsender a prefetch started (empty if none appears after 500 looks, 20 ms apart). Waits
        /// with `Task.sleep`: the prefetch runs on the cooperative pool, which a blocked thread
        /// would starve while the whole suite runs.
        func prefetchedWalsender(_ source: PostgresSource) async throws -> String {
            await source.prefetch()
            var pid = ""
            for _ in 0..<500 where pid.isEmpty {
                try await Task.sleep(for: .milliseconds(20))
                pid = try activePID()
            }
            return pid
        }
        let walsender = try await prefetchedWalsender(source)
        #expect(!walsender.isEmpty, "the prefetch opened no stream")
        let token = start.advancing("0", to: afterA)
        try await source.checkContinuity(from: token)
        try await source.acknowledge(token)
        let head = try await source.head(for: token)["0"]!
        let page = try await source.readPage(partition: "0", after: afterA, through: head, maxRecords: 100)
        #expect(page.records.map { Array($0.line) } == all[1...].map { Array($0.line) })
        #expect(page.records.map(\.position) == all[1...].map(\.position))
        #expect(try activePID() == walsender, "the read opened another stream instead of adopting the prefetched one")
        var confirmed = ""
        for _ in 0..<250 where confirmed != afterA {
            confirmed = try fixture.sql(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
            if confirmed != afterA { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(confirmed == afterA, "the acknowledgement before the read did not reach the slot")
        await source.close()
        #expect(try activePID().isEmpty)

        // A prefetch the run never reads (its checks failed) is released by `close`.
        let unread = try fixture.source()
        #expect(try await !prefetchedWalsender(unread).isEmpty, "the prefetch opened no stream")
        await unread.close()
        #expect(try activePID().isEmpty)
    }

    /// The walsender killed in the middle of a transaction larger than a page: the read fails
    /// as transient (the core retries it), and the retry resumes inside the transaction.
    @Test func aDroppedConnectionMidStreamIsTransientAndResumes() async throws {
        let fixture = try PostgresFixture()
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.now)
        // 40 MB of rows: more than the reader buffers, so the walsender is still sending.
        try fixture.sql(
            "INSERT INTO items (name, qty) SELECT repeat(md5(g::text), 300), g FROM generate_series(1, 4000) g")
        let head = try await source.head(for: start)["0"]!
        var records: [FeedRecord] = []
        var cursor = start.cursors["0"]!
        var failures = 0
        var terminated = false
        while true {
            if records.count >= 1000 && !terminated {
                terminated = true
                try fixture.sql(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'"
                )
                usleep(200_000)
            }
            let page: FeedPage
            do {
                page = try await source.readPage(partition: "0", after: cursor, through: head, maxRecords: 500)
            } catch let error as FeedArchiveError {
                #expect(RetryPolicy.isTransient(error), "\(error)")
                failures += 1
                #expect(failures < 5)
                if failures >= 5 { break }
                usleep(300_000)
                continue
            }
            if page.records.isEmpty { break }
            records += page.records
            cursor = page.next!
        }
        #expect(failures >= 1)
        #expect(records.count == 4000)
        #expect(Set(records.map(\.position)).count == 4000)
    }

    /// A walsender that stops answering (SIGSTOP) fails the read within query_timeout, as transient.
    @Test func aSilentServerFailsWithinTheQueryTimeout() async throws {
        let fixture = try PostgresFixture()
        let source = try fixture.source("query_timeout: 2s")
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.now)
        try fixture.sql(
            "INSERT INTO items (name, qty) SELECT repeat(md5(g::text), 300), g FROM generate_series(1, 4000) g")
        let head = try await source.head(for: start)["0"]!
        let first = try await source.readPage(partition: "0", after: start.cursors["0"]!, through: head, maxRecords: 10)
        #expect(first.records.count == 10)
        let pid = try #require(
            Int32(try fixture.sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")))
        // Drain what the walsender sent before it stopped, then wait on a silent socket, while
        // every other thread of the shared task pool is blocked too: the watchdog must still
        // run (it has a thread of its own; as a task it waited for a free pool thread).
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        final class Blockers: Sendable { let stop = Atomic<Bool>(false) }
        let blockers = Blockers()
        defer { blockers.stop.store(true, ordering: .relaxed) }
        for _ in 1..<max(2, ProcessInfo.processInfo.activeProcessorCount) {
            Task.detached {
                for _ in 0..<200 where !blockers.stop.load(ordering: .relaxed) { usleep(50_000) }
            }
        }
        let clock = ContinuousClock()
        let began = clock.now
        var next = first.next!
        do {
            while true {
                let page = try await source.readPage(partition: "0", after: next, through: head, maxRecords: 1000)
                if page.records.isEmpty { break }
                next = page.next!
            }
            Issue.record("the read ended although the walsender was stopped")
        } catch let error as FeedArchiveError {
            #expect(RetryPolicy.isTransient(error), "\(error)")
            #expect("\(error)".contains("query_timeout"), "\(error)")
        }
        #expect(clock.now - began < .seconds(6))
    }
}

/// A cluster whose pg_hba.conf asks each test user for another method over TCP.
@Suite(.serialized) struct PostgresAuthenticationTests {
    @Test func everyAuthenticationMethodStreams() async throws {
        let cluster = try PostgresTestCluster(name: "auth")
        let database = try cluster.makeDatabase()
        let hba = cluster.directory + "/data/pg_hba.conf"
        var rules = ["trust", "password", "md5", "scram-sha-256"].map {
            "host all u_\($0.replacingOccurrences(of: "-", with: "_")) 127.0.0.1/32 \($0)"
        }
        // u_tls may only connect with TLS: a self-signed certificate (sslmode require does not check it).
        rules += ["hostssl all u_tls 127.0.0.1/32 scram-sha-256", "hostnossl all u_tls 127.0.0.1/32 reject"]
        let data = cluster.directory + "/data"
        let owner = getuid() == 0 ? "chown postgres \(data)/server.key \(data)/server.crt && " : ""
        let certificate = try spawn(
            "/bin/sh",
            [
                "-c",
                "openssl req -new -x509 -days 2 -nodes -subj /CN=localhost -keyout \(data)/server.key -out \(data)/server.crt && chmod 600 \(data)/server.key && \(owner)true",
            ])
        #expect(reap(certificate) == 0)
        let existing = try String(contentsOfFile: hba, encoding: .utf8)
        try (rules.joined(separator: "\n") + "\n" + existing).write(toFile: hba, atomically: false, encoding: .utf8)
        try cluster.psql(
            """
            SET password_encryption = 'md5';
            CREATE ROLE u_md5 LOGIN REPLICATION PASSWORD 'pw-md5';
            SET password_encryption = 'scram-sha-256';
            CREATE ROLE u_trust LOGIN REPLICATION;
            CREATE ROLE u_password LOGIN REPLICATION PASSWORD 'pw-password';
            CREATE ROLE u_scram_sha_256 LOGIN REPLICATION PASSWORD 'pw-scram';
            CREATE ROLE u_tls LOGIN REPLICATION PASSWORD 'pw-tls';
            ALTER SYSTEM SET ssl = on;
            SELECT pg_reload_conf();
            """)
        try cluster.psql(
            "CREATE TABLE items (id serial PRIMARY KEY, name text); GRANT SELECT ON items TO PUBLIC", database: database
        )
        let slot = "s_" + database
        func source(user: String, password: String?, extra: String = "") throws -> PostgresSource {
            var yaml =
                "host: 127.0.0.1\nport: \(cluster.port)\ndatabase: \(database)\nuser: \(user)\nslot: \(slot)\ntables: [items]\nquery_timeout: 10s\n"
                + extra
            if let password { yaml += "password: \(password)\n" }
            return PostgresSource(
                settings: try PostgresSourceSettings.parse(try ConfigNode.parse(yaml: yaml, file: "/tmp/auth.yaml")))
        }
        let admin = PostgresSource(
            settings: try PostgresSourceSettings.parse(
                try ConfigNode.parse(
                    yaml:
                        "host: \(cluster.socketDirectory)\nport: \(cluster.port)\ndatabase: \(database)\nslot: \(slot)\ntables: [items]\n",
                    file: "/tmp/a.yaml")))
        try await admin.setup()
        await admin.close()
        let start = try cluster.psql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")
        try cluster.psql("INSERT INTO items (name) VALUES ('a'), ('b')", database: database)
        let users: [(String, String?, String)] = [
            ("u_trust", nil, "prefer"), ("u_password", "pw-password", "prefer"), ("u_md5", "pw-md5", "disable"),
            ("u_scram_sha_256", "pw-scram", "prefer"),
            ("u_tls", "pw-tls", "require"),
        ]
        for (user, password, mode) in users {
            let reader = try source(user: user, password: password, extra: "sslmode: \(mode)\n")
            let token = try await reader.resolve(.token("lsn=\(start)"))
            let head = try await reader.head(for: token)["0"]!
            let page = try await reader.readPage(partition: "0", after: start, through: head, maxRecords: 10)
            #expect(page.records.count == 2, "\(user)")
            await reader.close()
            // The wrong password, on the replication connection (read) and on the query
            // connection (identity): refused at once (exit 78, never retried), naming the setting.
            if password != nil {
                let wrong = try source(user: user, password: "wrong")
                var attempts = 0
                do {
                    _ = try await RetryPolicy(attempts: 6, initialDelay: 0.01, maxDelay: 0.02).run(
                        deadline: nil, stop: StopSignal()
                    ) {
                        attempts += 1
                        return try await wrong.readPage(partition: "0", after: start, through: head, maxRecords: 10)
                    }
                    Issue.record("\(user) got in with a wrong password")
                } catch let error as FeedArchiveError {
                    #expect(error.exitCode == 78 && !error.isRetryable, "\(user): \(error)")
                    #expect("\(error)".hasPrefix("source.password:"), "\(user): \(error)")
                }
                #expect(attempts == 1, "\(user): read \(attempts) times")
                do {
                    _ = try await wrong.identity()
                    Issue.record("\(user) got in with a wrong password")
                } catch let error as FeedArchiveError {
                    #expect(error.exitCode == 78 && !error.isRetryable, "\(user): \(error)")
                    #expect("\(error)".hasPrefix("source.password:"), "\(user): \(error)")
                }
                await wrong.close()
            }
        }
        // Without TLS, u_tls is refused (pg_hba's hostnossl reject, 28000): the stream above was encrypted.
        let plain = try source(user: "u_tls", password: "pw-tls", extra: "sslmode: disable\n")
        await #expect {
            _ = try await plain.readPage(partition: "0", after: start, through: "FFFFFFFF/0", maxRecords: 10)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 78 && "\(error)".hasPrefix("source.user:")
        }
        await plain.close()
    }
}
