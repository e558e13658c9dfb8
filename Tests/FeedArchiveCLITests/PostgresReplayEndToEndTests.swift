import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// `feedarchive replay` into PostgreSQL: a two-table workload (inserts, updates, deletes, a key
/// that changes, TOASTed values left unchanged by updates, a truncate) archived from one
/// database and replayed into a second one of the same cluster, as whole documents (`jsonb`)
/// and as typed columns; each table then holds exactly the source's rows.
@Suite(.serialized) struct PostgresReplayEndToEndTests {
    static let schema = """
        CREATE TABLE items (id bigserial PRIMARY KEY, name text, qty int, note text);
        CREATE TABLE accounts (region text, code int, owner text, active boolean, opened timestamptz, tags jsonb, PRIMARY KEY (region, code));
        """

    /// Transactions of every kind; `big` notes are TOASTed (random, so they do not compress
    /// under the inline limit), and updates that leave them out send them as unchanged.
    static func workload(_ round: Int) -> String {
        let big = "(SELECT string_agg(md5(random()::text || g::text), '') FROM generate_series(1, 150) g)"
        return """
            BEGIN;
            INSERT INTO items (name, qty, note) SELECT 'n\(round)-' || g, g, CASE WHEN g % 7 = 0 THEN \(big) ELSE 'é"\\' || g END FROM generate_series(1, 300) g;
            INSERT INTO accounts SELECT r, g + \(round) * 1000, 'o' || g, g % 2 = 0, timestamptz '2026-11-18 10:00:00.123456+00' + g * interval '1 minute', jsonb_build_object('g', g, 'l', jsonb_build_array(g, null, 'x')) FROM generate_series(1, 100) g, (VALUES ('eu'), ('us')) v(r);
            COMMIT;
            UPDATE items SET qty = qty + 1 WHERE id % 5 = \(round % 5);
            DELETE FROM items WHERE id % 11 = \(round % 11);
            UPDATE items SET id = id + 1000000 WHERE length(note) < 100 AND id % 13 = \(round % 13) AND id < 1000000;
            UPDATE accounts SET code = code + 500 WHERE code % 9 = 0 AND code < \(round) * 1000 + 500;
            UPDATE accounts SET owner = NULL, active = NOT active WHERE code % 4 = 1;
            DELETE FROM accounts WHERE code % 13 = 0;
            """
    }

    @Test func aReplicaInASecondDatabaseEqualsTheSource() async throws {
        let cluster = try PostgresTestCluster.shared()
        let source = try cluster.makeDatabase("rsrc")
        let replica = try cluster.makeDatabase("rdst")
        try cluster.psql(Self.schema, database: source)
        let dir = TempDirectory("feedarchive-pg-replay")
        dir.write(
            "shop.yaml",
            """
            name: shop
            \(cluster.sourceBlock(database: source, slot: "s_" + source, tables: ["items", "accounts"]))
            archive:
              root: lake
            batch:
              max_records: 400

            """)
        let target = """
            kind: postgres
              host: \(cluster.socketDirectory)
              port: \(cluster.port)
              database: \(replica)
              user: postgres
            """
        dir.write(
            "items-doc.yaml",
            "name: items-doc\narchive_job: shop.yaml\nsource_table: items\ntarget:\n  \(target)\n  table: items_doc\n")
        dir.write(
            "items.yaml",
            """
            name: items
            archive_job: shop.yaml
            source_table: public.items
            target:
              \(target)
              table: items
              key: id
              columns: {id: integer, name: text, qty: integer, note: text}

            """)
        dir.write(
            "accounts.yaml",
            """
            name: accounts
            archive_job: shop.yaml
            source_table: accounts
            target:
              \(target)
              table: accounts
              key: [region, code]
              columns: {region: text, code: integer, owner: text, active: boolean, opened: timestamp, tags: json}

            """)
        #expect(try await Binary.run(["setup", dir.path + "/shop.yaml"]).status == 0)
        for round in 1...3 {
            try cluster.psql(Self.workload(round), database: source)
            if round == 2 { try cluster.psql("TRUNCATE items", database: source) }
            let run = try await Binary.run(["run", dir.path + "/shop.yaml"])
            #expect(run.status == 0, "\(run.stderr)")
            for job in ["items-doc", "items", "accounts"] {
                let replay = try await Binary.run(["replay", dir.path + "/\(job).yaml"])
                #expect(replay.status == 0 && replay.stderr.contains("replayed"), "\(job): \(replay.stderr)")
            }
        }
        // The feed holds what this is about: key changes, unchanged TOAST values, a truncate.
        let feed = try await Binary.run(["cat", dir.path + "/shop.yaml"])
        #expect(feed.stdout.contains(#""old_key":{"region":"#) && feed.stdout.contains(#""unchanged_toast":["note"]"#))
        #expect(feed.stdout.contains(#""op":"t""#))

        // Every row, every value: the source's rows and the replica's, in key order, as text.
        let items = "SELECT id, name, qty, note FROM items ORDER BY id"
        let accounts = "SELECT region, code, owner, active, opened, tags FROM accounts ORDER BY region, code"
        let sourceItems = try cluster.psql(items, database: source)
        #expect(sourceItems.split(separator: "\n").count > 200)
        #expect(try cluster.psql(items, database: replica) == sourceItems)
        #expect(
            try cluster.psql(
                "SELECT (doc->>'id')::bigint, doc->>'name', (doc->>'qty')::int, doc->>'note' FROM items_doc ORDER BY 1",
                database: replica) == sourceItems)
        #expect(
            try cluster.psql(
                "SELECT count(*) FROM items_doc WHERE key::jsonb <> jsonb_build_object('id', (doc->>'id')::bigint)",
                database: replica) == "0")
        let sourceAccounts = try cluster.psql(accounts, database: source)
        #expect(sourceAccounts.split(separator: "\n").count > 300)
        #expect(try cluster.psql(accounts, database: replica) == sourceAccounts)
        // The updates left TOASTed notes out of the change; the replica kept them.
        #expect(
            try cluster.psql("SELECT count(*) FROM items WHERE length(note) > 4000", database: replica) != "0")

        // Killed in its transactions, then finished: the same rows; run again: nothing to do.
        try cluster.psql(Self.workload(4), database: source)
        #expect(try await Binary.run(["run", dir.path + "/shop.yaml"]).status == 0)
        for delay in [5_000, 20_000, 40_000, 80_000] as [UInt32] {
            let child = try Binary.start(["replay", dir.path + "/accounts.yaml"])
            usleep(delay)
            child.signal(SIGKILL)
            _ = await child.finish()
        }
        let finished = try await Binary.run(["replay", dir.path + "/accounts.yaml"])
        #expect(finished.status == 0, "\(finished.stderr)")
        #expect(try cluster.psql(accounts, database: replica) == cluster.psql(accounts, database: source))
        let again = try await Binary.run(["replay", dir.path + "/accounts.yaml"])
        #expect(again.stderr.contains("replayed 0 changes"), "\(again.stderr)")
        let status = try await Binary.run(["replay", dir.path + "/accounts.yaml", "--status"])
        #expect(status.stdout.contains("behind: 0 changes; dead letters: 0"), "\(status.stdout)")
    }

    /// A value the mapping cannot take, and one the server refuses (a NUL in a text column),
    /// go to the dead letters with the reason; the rest of the batch is applied.
    @Test func refusedValuesAreDeadLettersNotLosses() async throws {
        let cluster = try PostgresTestCluster.shared()
        let source = try cluster.makeDatabase("rsrc")
        let replica = try cluster.makeDatabase("rdst")
        try cluster.psql(
            "CREATE TABLE things (id int PRIMARY KEY, body json)", database: source)
        let dir = TempDirectory("feedarchive-pg-replay")
        dir.write(
            "things.yaml",
            """
            name: things
            \(cluster.sourceBlock(database: source, slot: "s_" + source, tables: ["things"]))
            archive:
              root: lake

            """)
        dir.write(
            "replica.yaml",
            """
            name: replica
            archive_job: things.yaml
            target:
              kind: postgres
              host: \(cluster.socketDirectory)
              port: \(cluster.port)
              database: \(replica)
              table: things
              key: id
              columns: {id: integer, body: text}
              document: doc

            """)
        #expect(try await Binary.run(["setup", dir.path + "/things.yaml"]).status == 0)
        try cluster.psql(
            """
            INSERT INTO things SELECT g, to_json('text ' || g) FROM generate_series(1, 50) g;
            INSERT INTO things VALUES (51, '{"not": "a string"}'), (52, '"nul \\u0000 inside"');
            """, database: source)
        let sent = try cluster.psql("SELECT body FROM things WHERE id = 52", database: source)
        #expect(sent.contains("\\u0000"), "\(sent)")
        #expect(try await Binary.run(["run", dir.path + "/things.yaml"]).status == 0)
        let replay = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(replay.status == 0 && replay.stderr.contains("warning: 2 changes"), "\(replay.stderr)")
        #expect(try cluster.psql("SELECT count(*) FROM things", database: replica) == "50")
        let reasons = try cluster.psql(
            "SELECT key || ' ' || reason FROM _feedarchive_replay_rejected ORDER BY pos", database: replica)
        #expect(reasons.contains(#"{"id":51} column body: {"not": "a string"} is not a string (text)"#), "\(reasons)")
        #expect(reasons.contains(#"{"id":52} the target refused it: "#), "\(reasons)")

        // A row moved to another key by an update that left its TOASTed value out cannot be
        // rebuilt from the change: a dead letter that says how to avoid it, not a NULL.
        try cluster.psql(
            """
            ALTER TABLE things ADD COLUMN big text;
            INSERT INTO things VALUES (60, '"x"', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g));
            UPDATE things SET id = 61 WHERE id = 60;
            """, database: source)
        #expect(try await Binary.run(["run", dir.path + "/things.yaml"]).status == 0)
        let moved = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(moved.status == 0 && moved.stderr.contains("warning: 1 changes"), "\(moved.stderr)")
        let reason = try cluster.psql(
            "SELECT reason FROM _feedarchive_replay_rejected WHERE key = '{\"id\":61}'", database: replica)
        #expect(
            reason.contains("moved the row to another key") && reason.contains("REPLICA IDENTITY FULL"), "\(reason)")
    }
}
