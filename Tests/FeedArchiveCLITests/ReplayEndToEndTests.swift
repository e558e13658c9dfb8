import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// `feedarchive replay` into SQLite: the replica equals the state the source's changes describe
/// (upserts, deletes, a truncate), up to now or to a point in time, and a replay killed at any
/// point resumes to exactly that state.
@Suite struct ReplayEndToEndTests {
    static func python(_ arguments: [String]) async throws -> (Int32, String) {
        let dir = TempDirectory()
        let out = dir.path + "/out"
        let pid = try spawn(
            "python3", [Binary.packageRoot + "/scripts/replay_check.py"] + arguments, stdout: out, stderr: out)
        let status = await reapAsync(pid)
        return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    @Test func theReplicaHoldsTheSourcesStateNowAndAtAPointInTime() async throws {
        let dir = TempDirectory()
        let db = dir.path + "/entities.db"
        #expect(try await Self.python(["make", db, "3000"]).0 == 0)
        dir.write(
            "entities.yaml",
            """
            name: entities
            source:
              kind: sqlite
              path: entities.db
              table: outbox
              sequence_column: seq
              document_column: doc
              key_column: entity
              op_column: op
              timestamp_column: at
            archive:
              root: lake
            batch:
              max_records: 97

            """)
        dir.write(
            "replica.yaml",
            """
            name: replica
            archive_job: entities.yaml
            target:
              kind: sqlite
              path: replica.db
              table: entities

            """)
        let run = try await Binary.run(["run", dir.path + "/entities.yaml"])
        #expect(run.status == 0, "\(run.stderr)")
        let replay = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(replay.status == 0 && replay.stderr.contains("replayed 3000 changes"), "\(replay.stderr)")
        let now = try await Self.python(["check", db, dir.path + "/replica.db"])
        #expect(now.0 == 0, "\(now.1)")
        // Again: nothing more to apply, the same state.
        let again = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(again.stderr.contains("replayed 0 changes"), "\(again.stderr)")

        // Points in time, before and after the truncate.
        for cutoff in ["2026-11-18T11:10:00Z", "2026-11-18T11:30:00Z", "2026-11-18T11:40:07Z"] {
            let back = try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", cutoff, "--from-scratch"])
            #expect(back.status == 0, "\(back.stderr)")
            let state = try await Self.python(["check", db, dir.path + "/replica.db", cutoff])
            #expect(state.0 == 0, "\(cutoff): \(state.1)")
        }

        // A point in time given as a token: where the archive stood after the first run, with
        // more changes archived since.
        let checkpoint = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: dir.path + "/lake/entities/_feedarchive/checkpoint.json")))
        let token = try #require((checkpoint as? [String: Any])?["token"] as? String)
        try sqlite(
            db,
            "INSERT INTO outbox (entity, op, doc, at) SELECT 'late-' || value, 'c', json_object('v', value), '2026-11-18T13:00:00Z' FROM generate_series(1, 40)"
        )
        #expect(try await Binary.run(["run", dir.path + "/entities.yaml"]).status == 0)
        let atToken = try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", token, "--from-scratch"])
        #expect(atToken.status == 0 && atToken.stderr.contains("replayed"), "\(atToken.stderr)")
        let tokenState = try await Self.python(["check", db, dir.path + "/replica.db", "seq:3000"])
        #expect(tokenState.0 == 0, "\(tokenState.1)")
        let unknown = try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", "sqlite:eyJub3QiOjF9"])
        #expect(unknown.status == 64 && unknown.stderr.contains("no run of this archive ended at this token"))
        // A replay only moves forward: an earlier point without --from-scratch is refused, by
        // time and by token, and the target stays as it was; --status takes no point.
        let earlier = try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", "2026-11-18T11:10:00Z"])
        #expect(earlier.status == 64 && earlier.stderr.contains("add --from-scratch"), "\(earlier.stderr)")
        #expect(try await Self.python(["check", db, dir.path + "/replica.db", "seq:3000"]).0 == 0)
        let finalToken = try #require(
            (try JSONSerialization.jsonObject(
                with: Data(
                    contentsOf: URL(fileURLWithPath: dir.path + "/lake/entities/_feedarchive/checkpoint.json")))
                as? [String: Any])?["token"] as? String)
        #expect(try await Binary.run(["replay", dir.path + "/replica.yaml"]).status == 0)
        let earlierToken = try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", token])
        #expect(earlierToken.status == 64 && earlierToken.stderr.contains("add --from-scratch"))
        #expect(try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", finalToken]).status == 0)
        let statusAt = try await Binary.run(["replay", dir.path + "/replica.yaml", "--status", "--until", token])
        #expect(statusAt.status == 64, "\(statusAt.stderr)")
        // A source_table no change has: told, not a silent empty replica.
        dir.write(
            "misspelt.yaml",
            """
            name: misspelt
            archive_job: entities.yaml
            source_table: outbx
            target: {kind: sqlite, path: misspelt.db, table: entities}

            """)
        let misspelt = try await Binary.run(["replay", dir.path + "/misspelt.yaml"])
        #expect(misspelt.status == 0 && misspelt.stderr.contains("warning: none of the"), "\(misspelt.stderr)")
        #expect(misspelt.stderr.contains("source_table outbx"))

        // Killed at any point, 50 times, then finished: exactly the state, and nothing applied
        // twice: an audit trigger on the replica sees each upsert after the cut exactly once.
        let resume = "2026-11-18T11:00:01Z"
        _ = try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", resume, "--from-scratch"])
        try sqlite(
            dir.path + "/replica.db",
            """
            CREATE TABLE audit (n INTEGER PRIMARY KEY, op TEXT, key TEXT);
            CREATE TRIGGER audit_insert AFTER INSERT ON entities BEGIN INSERT INTO audit (op, key) VALUES ('i', new.key); END;
            CREATE TRIGGER audit_update AFTER UPDATE ON entities BEGIN INSERT INTO audit (op, key) VALUES ('u', new.key); END;
            """)
        // Each attempt aims a minute further into the feed, so every kill lands where there is
        // work: before the read, in it, in the commit, or after it.
        var rng = SystemRandomNumberGenerator()
        for minute in 1...50 {
            let cut = "2026-11-18T11:\(minute < 10 ? "0" : "")\(minute):00Z"
            let child = try Binary.start(["replay", dir.path + "/replica.yaml", "--until", cut])
            usleep(UInt32.random(in: 0..<60_000, using: &rng))
            child.signal(SIGKILL)
            _ = await child.finish()
        }
        let finished = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(finished.status == 0, "\(finished.stderr)")
        let exact = try await Self.python(["check", db, dir.path + "/replica.db"])
        #expect(exact.0 == 0, "\(exact.1)")
        let upserts = try await Self.python(["upserts", db, resume])
        let audited = try sqliteValue(dir.path + "/replica.db", "SELECT count(*) FROM audit")
        #expect(upserts.0 == 0 && upserts.1.trimmingCharacters(in: .whitespacesAndNewlines) == audited)
    }

    /// Blobs are decoded as a stream: lines longer than a decoded piece (documents of 300 KB
    /// to 2 MB, in blobs of several MB) span pieces, and the replica holds each whole.
    @Test func linesLongerThanADecodedPieceArriveWhole() async throws {
        let dir = TempDirectory()
        try sqlite(
            dir.path + "/big.db",
            """
            CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT, doc TEXT, at TEXT);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
            INSERT INTO outbox (entity, doc, at)
            SELECT 'e' || (i % 25), json_object('n', i, 'big', printf('%.*c', CASE WHEN i % 10 = 0 THEN 2000000 ELSE 300000 + i END, 'x'), 'tail', 'end-' || i),
              printf('2026-11-18T10:00:%02dZ', i)
            FROM n;
            """)
        dir.write(
            "big.yaml",
            """
            name: big
            source: {kind: sqlite, path: big.db, table: outbox, sequence_column: seq, document_column: doc, key_column: entity, timestamp_column: at}
            archive: {root: lake}
            batch: {max_records: 40, max_bytes: 64MiB}

            """)
        dir.write(
            "copy.yaml", "name: copy\narchive_job: big.yaml\ntarget: {kind: sqlite, path: copy.db, table: docs}\n")
        #expect(try await Binary.run(["run", dir.path + "/big.yaml"]).status == 0)
        let replay = try await Binary.run(["replay", dir.path + "/copy.yaml"])
        #expect(replay.status == 0 && replay.stderr.contains("replayed 40 changes from 1 blobs"), "\(replay.stderr)")
        // The last change of each of the 25 keys, whole.
        let expected = try sqliteValue(
            dir.path + "/big.db",
            "SELECT group_concat(entity || ':' || length(doc) || ':' || json_extract(doc, '$.tail'), ',') FROM (SELECT entity, doc FROM outbox WHERE seq IN (SELECT max(seq) FROM outbox GROUP BY entity) ORDER BY entity)"
        )
        let replica = try sqliteValue(
            dir.path + "/copy.db",
            "SELECT group_concat(json_extract(key, '$') || ':' || length(doc) || ':' || json_extract(doc, '$.tail'), ',') FROM (SELECT key, doc FROM docs ORDER BY json_extract(key, '$'))"
        )
        #expect(replica == expected && expected.contains("2000"), "\(replica.prefix(200)) vs \(expected.prefix(200))")
    }

    /// Typed columns: each field converted to its column's type; a value that does not fit
    /// goes to the dead letters with the reason (the row keeps its previous version), counted
    /// in the summary, `--status` and the metrics.
    @Test func typedColumnsAndDeadLetters() async throws {
        let dir = TempDirectory()
        let db = dir.path + "/entities.db"
        #expect(try await Self.python(["make-typed", db, "3000"]).0 == 0)
        dir.write(
            "entities.yaml",
            """
            name: entities
            source:
              kind: sqlite
              path: entities.db
              table: outbox
              sequence_column: seq
              document_column: doc
              key_column: entity
              op_column: op
              timestamp_column: at
            archive:
              root: lake
            batch:
              max_records: 250

            """)
        dir.write(
            "typed.yaml",
            """
            name: typed
            archive_job: entities.yaml
            target:
              kind: sqlite
              path: replica.db
              table: entities
              key: id
              columns:
                id: text
                v: integer
                name: text
                at: timestamp
                flag: boolean
                tags: json

            """)
        #expect(try await Binary.run(["run", dir.path + "/entities.yaml"]).status == 0)
        let replay = try await Binary.run([
            "replay", dir.path + "/typed.yaml", "--metrics-file", dir.path + "/replay.prom",
        ])
        #expect(replay.status == 0, "\(replay.stderr)")
        #expect(replay.stderr.contains("replayed 2976 changes") && replay.stderr.contains("warning: 24 changes"))
        let check = try await Self.python(["check-typed", db, dir.path + "/replica.db"])
        #expect(check.0 == 0, "\(check.1)")
        let status = try await Binary.run(["replay", dir.path + "/typed.yaml", "--status"])
        #expect(status.status == 0 && status.stdout.contains("behind: 0 changes; dead letters: 24"), "\(status.stdout)")
        let metrics = (try? String(contentsOfFile: dir.path + "/replay.prom", encoding: .utf8)) ?? ""
        #expect(metrics.contains("feedarchive_replay_rejected{replay=\"typed\"} 24"), "\(metrics)")
        #expect(metrics.contains("feedarchive_replay_last_exit_code{replay=\"typed\"} 0"))

        // A mapping error is the job file's: file:line:column and exit 78, nothing applied.
        dir.write(
            "bad.yaml",
            """
            name: bad
            archive_job: entities.yaml
            target:
              kind: sqlite
              path: bad.db
              table: entities
              key: id
              columns:
                id: text
                v: decimal

            """)
        let bad = try await Binary.run(["replay", dir.path + "/bad.yaml"])
        #expect(
            bad.status == 78 && bad.stderr.contains("bad.yaml:10:") && bad.stderr.contains("'decimal'"), "\(bad.stderr)"
        )
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/bad.db"))
    }

    /// The same replay job reached by another path (a symlink, a copy on another host) resets
    /// the target while a replay runs: that one must not go on from where it was and skip what
    /// the reset emptied. It stops (75) at its next transaction; the target ends exact.
    @Test func aResetUnderARunningReplayIsNoticed() async throws {
        let dir = TempDirectory()
        let db = dir.path + "/entities.db"
        #expect(try await Self.python(["make-inserts", db, "40000"]).0 == 0)
        dir.write(
            "entities.yaml",
            """
            name: entities
            source:
              kind: sqlite
              path: entities.db
              table: outbox
              sequence_column: seq
              document_column: doc
              key_column: entity
              op_column: op
              timestamp_column: at
            archive:
              root: lake
            batch:
              max_records: 500

            """)
        dir.write(
            "replica.yaml",
            "name: replica\narchive_job: entities.yaml\ntarget:\n  kind: sqlite\n  path: replica.db\n  table: entities\n"
        )
        try FileManager.default.createSymbolicLink(
            atPath: dir.path + "/other.yaml", withDestinationPath: dir.path + "/replica.yaml")
        #expect(try await Binary.run(["run", dir.path + "/entities.yaml"]).status == 0)
        // A replay that has committed some transactions is paused; the other path resets the
        // target and applies a little; the first one goes on.
        let running = try Binary.start(["replay", dir.path + "/replica.yaml", "--from-scratch"])
        var committed = false
        for _ in 0..<400 where !committed {
            usleep(10_000)
            committed =
                (try? sqliteValue(dir.path + "/replica.db", "SELECT count(*) FROM _feedarchive_replay")) == "1"
        }
        running.signal(SIGSTOP)
        #expect(committed)
        let reset = try await Binary.run([
            "replay", dir.path + "/other.yaml", "--from-scratch", "--until", "2026-11-18T11:00:05Z",
        ])
        #expect(reset.status == 0, "\(reset.stderr)")
        running.signal(SIGCONT)
        let first = await running.finish()
        // Unless it had already finished, it noticed and stopped.
        #expect(first.status == 0 || first.status == 75, "\(first.stderr)")
        if first.status == 75 { #expect(first.stderr.contains("another replay of the job reset it")) }
        let again = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(again.status == 0, "\(again.stderr)")
        let exact = try await Self.python(["check", db, dir.path + "/replica.db"])
        #expect(exact.0 == 0, "\(exact.1)")
    }

    func sqlite(_ path: String, _ sql: String) throws {
        let dir = TempDirectory()
        let pid = try spawn("sqlite3", [path, sql], stdout: dir.path + "/out", stderr: dir.path + "/out")
        let status = reap(pid)
        if status != 0 {
            throw FeedArchiveError.usage(
                (try? String(contentsOfFile: dir.path + "/out", encoding: .utf8)) ?? "sqlite3 failed")
        }
    }

    func sqliteValue(_ path: String, _ sql: String) throws -> String {
        let dir = TempDirectory()
        let pid = try spawn("sqlite3", [path, sql], stdout: dir.path + "/out", stderr: dir.path + "/err")
        _ = reap(pid)
        return ((try? String(contentsOfFile: dir.path + "/out", encoding: .utf8)) ?? "").trimmingCharacters(
            in: .whitespacesAndNewlines)
    }
}
