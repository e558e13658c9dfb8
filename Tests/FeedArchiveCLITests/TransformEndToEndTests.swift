import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// A job with a `transform:` section on a real SQLite feed: what the archive holds is
/// transformed, no redacted value (nor any 8-character piece of one) appears in a blob, the
/// log, the metrics or `status`; verify against the source agrees; a backfill writes the same
/// bytes; a changed section is refused until confirmed.
@Suite struct TransformEndToEndTests {
    static let key = "Kq7zP2vX9mW4rT6yB3nL"

    static func makeFeed(_ path: String, count: Int) throws -> [String] {
        var secrets: [String] = []
        var sql =
            "BEGIN; CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT, doc TEXT, at TEXT);\n"
        for n in 1...count {
            let email = "personal.mail.\(n)@example-\(n % 7).com"
            let phone = "+47 9\(String(format: "%07d", n * 7919 % 10_000_000))"
            secrets += [email, phone]
            let doc =
                #"{"id": \#(n), "name": "Ünï \"\#(n)\"", "email": "\#(email)", "password": "pw-\#(n)-secret", "#
                + #""contact": {"phone": "\#(phone)", "city": "Oslo"}, "lines": [{"sku": "s\#(n)", "email": "\#(email)"}, 3], "ключ": \#(n % 2 == 0 ? "true" : "null")}"#
            sql +=
                "INSERT INTO outbox (entity, doc, at) VALUES ('e\(n % 50)', '\(doc.replacingOccurrences(of: "'", with: "''"))', '2026-11-18T\(10 + n / 3600):\(String(format: "%02d", n / 60 % 60)):\(String(format: "%02d", n % 60))Z');\n"
        }
        sql += "COMMIT;\n"
        let file = path + ".sql"
        try Data(sql.utf8).write(to: URL(fileURLWithPath: file))
        let status = reap(try spawn("sqlite3", [path, ".read " + file]))
        guard status == 0 else { throw FeedArchiveError.usage("sqlite3 failed") }
        return secrets
    }

    static let job = """
        name: people
        source:
          kind: sqlite
          path: people.db
          table: outbox
          sequence_column: seq
          document_column: doc
          key_column: entity
          timestamp_column: at
        archive:
          root: lake
        batch:
          max_records: 120
        transform:
          - drop: [password]
          - select: [id, name, email, contact, lines, ключ]
          - redact: {fields: [email, lines.email], key: "${PEOPLE_KEY}"}
          - redact: {fields: [contact.phone], mask: "(hidden)"}

        """

    /// Every blob's content, decompressed, in manifest order per lineage.
    static func contents(_ root: String) throws -> [String: [UInt8]] {
        var result: [String: [UInt8]] = [:]
        let manifest = root + "/_feedarchive/manifest"
        for file in try FileManager.default.contentsOfDirectory(atPath: manifest).sorted() {
            for line in try String(contentsOfFile: manifest + "/" + file, encoding: .utf8).split(separator: "\n") {
                let entry = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                guard entry["kind"] as? String == "blob", let path = entry["path"] as? String else { continue }
                let lineage = try #require(entry["lineage"] as? String)
                #expect(entry["transform"] as? String != nil, "a blob line without its transform: \(line)")
                let bytes = try Data(contentsOf: URL(fileURLWithPath: root + "/" + path))
                result[lineage, default: []] += try Compression.zstd.makeDecoder().decodeAll(Array(bytes))
            }
        }
        return result
    }

    @Test func redactedValuesNeverReachTheArchiveTheLogOrTheMetrics() async throws {
        let dir = TempDirectory()
        let secrets = try Self.makeFeed(dir.path + "/people.db", count: 600)
        dir.write("people.yaml", Self.job)
        let environment: [String: String?] = ["PEOPLE_KEY": Self.key]
        let run = try await Binary.run(
            ["run", dir.path + "/people.yaml", "--metrics-file", dir.path + "/people.prom"], environment: environment)
        #expect(run.status == 0, "\(run.stderr)")
        let status = try await Binary.run(["status", dir.path + "/people.yaml"], environment: environment)
        let verify = try await Binary.run(
            ["verify", dir.path + "/people.yaml", "--against-source", "--deep"], environment: environment)
        #expect(verify.status == 0 && verify.stdout.contains("clean"), "\(verify.stdout)\(verify.stderr)")
        let cat = try await Binary.run(["cat", dir.path + "/people.yaml"], environment: environment)
        let root = dir.path + "/lake/people"
        let archived = try Self.contents(root)["live"] ?? []
        #expect(String(decoding: archived, as: UTF8.self) == cat.stdout)

        // The transforms were applied: every line has its fields redacted, dropped, selected.
        let lines = cat.stdout.split(separator: "\n")
        #expect(lines.count == 600)
        for line in lines.prefix(20) {
            let envelope = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let after = try #require(envelope["after"] as? [String: Any])
            #expect(Set(after.keys) == ["id", "name", "email", "contact", "lines", "ключ"])
            #expect((after["email"] as? String)?.count == 64)
            #expect((after["contact"] as? [String: Any])?["phone"] as? String == "(hidden)")
        }
        // Equal inputs, equal outputs: a person's email and the same email in their lines.
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        let after = try #require(first["after"] as? [String: Any])
        #expect(((after["lines"] as? [Any])?.first as? [String: Any])?["email"] as? String == after["email"] as? String)

        // No secret, nor any 8-character piece of one, anywhere the job writes or prints.
        var everything = String(decoding: archived, as: UTF8.self)
        everything += run.stdout + run.stderr + status.stdout + status.stderr + verify.stdout + cat.stderr
        everything += (try? String(contentsOfFile: dir.path + "/people.prom", encoding: .utf8)) ?? ""
        for file in (FileManager.default.enumerator(atPath: root + "/_feedarchive")?.allObjects as? [String]) ?? [] {
            everything += (try? String(contentsOfFile: root + "/_feedarchive/" + file, encoding: .utf8)) ?? ""
        }
        // Every 8-byte window of what was written, to look each piece of a secret up at once.
        let bytes = Array(everything.utf8)
        var windows = Set<UInt64>()
        func window(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
        for start in 0...(bytes.count - 8) { windows.insert(window(bytes[start..<(start + 8)])) }
        var leaks: [String] = []
        for secret in secrets + [Self.key] {
            let characters = Array(secret.utf8)
            for start in 0...(characters.count - 8) {
                let piece = characters[start..<(start + 8)]
                // Pieces that are not personal (the shared domain) may appear.
                let text = String(decoding: piece, as: UTF8.self)
                if text.allSatisfy({ $0.isLetter || $0 == "." || $0 == "-" }) && !text.contains("personal") { continue }
                if windows.contains(window(piece)) { leaks.append(text) }
            }
            if leaks.count > 3 { break }
        }
        #expect(leaks.isEmpty, "\(leaks.prefix(3))")

        // A backfill of the same range under the same transforms writes the same bytes.
        let backfill = try await Binary.run(
            ["backfill", dir.path + "/people.yaml", "--from", "beginning"], environment: environment)
        #expect(backfill.status == 0, "\(backfill.stderr)")
        let lineages = try Self.contents(root)
        let backfilled = lineages.filter { $0.key != "live" }.values.first ?? []
        #expect(!backfilled.isEmpty && backfilled == archived)

        // Another key is another transform: refused until confirmed.
        let other: [String: String?] = ["PEOPLE_KEY": "another-key-0123456789"]
        let refused = try await Binary.run(["run", dir.path + "/people.yaml"], environment: other)
        #expect(refused.status == 78 && refused.stderr.contains("--transform-changed"), "\(refused.stderr)")
        let confirmed = try await Binary.run(
            ["run", dir.path + "/people.yaml", "--transform-changed"], environment: other)
        #expect(confirmed.status == 0, "\(confirmed.stderr)")
        let after2 = try await Binary.run(["run", dir.path + "/people.yaml"], environment: other)
        #expect(after2.status == 0, "\(after2.stderr)")
    }

    /// A record the transforms cannot take is neither archived as it is nor dropped: it goes to
    /// the dead letters with the reason (its documents withheld, since the job redacts), is
    /// counted, and `cat --rejected` shows it; the changes around it are archived.
    @Test func aDocumentTheTransformsCannotTakeIsADeadLetter() async throws {
        let dir = TempDirectory()
        _ = try Self.makeFeed(dir.path + "/people.db", count: 30)
        let status = reap(
            try spawn(
                "sqlite3",
                [
                    dir.path + "/people.db",
                    #"INSERT INTO outbox (entity, doc, at) VALUES ('x', '"personal.mail.secret@example.com"', '2026-11-18T11:00:00Z'); INSERT INTO outbox (entity, doc, at) VALUES ('y', '{"id": 1}', '2026-11-18T11:00:00Z')"#,
                ]))
        #expect(status == 0)
        dir.write("people.yaml", Self.job)
        let environment: [String: String?] = ["PEOPLE_KEY": Self.key]
        let run = try await Binary.run(["run", dir.path + "/people.yaml"], environment: environment)
        #expect(run.status == 0 && run.stderr.contains("1 REJECTED by the transform"), "\(run.stderr)")
        let cat = try await Binary.run(["cat", dir.path + "/people.yaml"], environment: environment)
        #expect(cat.stdout.split(separator: "\n").count == 31)
        let rejected = try await Binary.run(["cat", dir.path + "/people.yaml", "--rejected"], environment: environment)
        let letters = rejected.stdout.split(separator: "\n")
        #expect(letters.count == 1, "\(rejected.stdout)")
        let letter = try #require(
            try JSONSerialization.jsonObject(with: Data((letters.first ?? "").utf8)) as? [String: Any])
        #expect(letter["pos"] as? String == "00000000000000000031" && letter["withheld"] as? Bool == true)
        #expect((letter["reason"] as? String)?.contains("is not a JSON object") == true)
        #expect(((letter["envelope"] as? [String: Any])?["key"] as? String) == "x")
        #expect(!rejected.stdout.contains("secret@example"))
        let state = try await Binary.run(["status", dir.path + "/people.yaml"], environment: environment)
        #expect(state.stdout.contains("1 rejected by the transform"), "\(state.stdout)")
        let verify = try await Binary.run(
            ["verify", dir.path + "/people.yaml", "--full", "--against-source"], environment: environment)
        #expect(verify.status == 0 && verify.stdout.contains("clean"), "\(verify.stdout)")
    }

    /// A document with spaces, tabs or line breaks around it is valid JSON: it is archived as
    /// its value, so the transforms, replay and Parquet read it like any other.
    @Test func documentsWithSpaceAroundThemAreTransformedAndReplayed() async throws {
        let dir = TempDirectory()
        let status = reap(
            try spawn(
                "sqlite3",
                [
                    dir.path + "/spaced.db",
                    """
                    CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT, doc TEXT);
                    INSERT INTO outbox (entity, doc) VALUES ('a', '  {"id": 1, "email": "a@example.com"}  ');
                    INSERT INTO outbox (entity, doc) VALUES ('b', char(9) || '{"id": 2, "email": "b@example.com"}' || char(13) || char(10));
                    INSERT INTO outbox (entity, doc) VALUES ('c', ' {"id": 3, "email": "c@example.com"}');
                    INSERT INTO outbox (entity, doc) VALUES ('d', ' [1, 2] ');
                    INSERT INTO outbox (entity, doc) VALUES ('e', '{"id": 5,' || char(10) || ' "email": "e@example.com"} ');
                    """,
                ]))
        #expect(status == 0)
        let source = """
            source:
              kind: sqlite
              path: spaced.db
              table: outbox
              sequence_column: seq
              document_column: doc
              key_column: entity
            """
        dir.write("plain.yaml", "name: plain\n\(source)\narchive:\n  root: lake\n")
        dir.write(
            "shaped.yaml",
            "name: shaped\n\(source)\narchive:\n  root: lake\ntransform:\n  - select: [id]\n")
        let plain = try await Binary.run(["run", dir.path + "/plain.yaml"])
        #expect(plain.status == 0, "\(plain.stderr)")
        let lines = try await Binary.run(["cat", dir.path + "/plain.yaml"]).stdout.split(separator: "\n")
        #expect(lines.count == 5)
        for line in lines {
            #expect(!line.contains(#""after": "#) && !line.contains(#"} ,"#) && !line.contains("\t"), "\(line)")
        }
        let shaped = try await Binary.run(["run", dir.path + "/shaped.yaml"])
        #expect(shaped.status == 0 && shaped.stderr.contains("1 REJECTED by the transform"), "\(shaped.stderr)")
        let kept = try await Binary.run(["cat", dir.path + "/shaped.yaml"]).stdout
        for id in [1, 2, 3, 5] { #expect(kept.contains(#""after":{"id":\#(id)}"#), "\(kept)") }
        #expect(!kept.contains("example.com"))
        let rejected = try await Binary.run(["cat", dir.path + "/shaped.yaml", "--rejected"]).stdout
        #expect(rejected.contains("is not a JSON object") && rejected.contains(#""key":"d""#), "\(rejected)")
        dir.write(
            "replica.yaml",
            "name: replica\narchive_job: plain.yaml\ntarget:\n  kind: sqlite\n  path: replica.db\n  table: docs\n")
        let replay = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(replay.status == 0 && replay.stderr.contains("replayed 5 changes"), "\(replay.stderr)")
    }

    /// Filters under kill -9: cron-like runs killed at random moments, then one that finishes;
    /// the archive's changes and the filtered counts account for every source change, and the
    /// archive holds exactly the changes the filters keep.
    @Test func filteredChangesAreAccountedForUnderKills() async throws {
        let dir = TempDirectory()
        let status = reap(
            try spawn(
                "sqlite3",
                [
                    dir.path + "/people.db",
                    """
                    CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT, op TEXT, doc TEXT, at TEXT);
                    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                    INSERT INTO outbox (entity, op, doc, at)
                    SELECT 'e' || (i % 300), CASE WHEN i % 17 = 0 THEN 'd' ELSE 'u' END,
                      json_object('id', i, 'kind', CASE i % 3 WHEN 0 THEN 'test' WHEN 1 THEN 'live' ELSE 'other' END, 'amount', CASE WHEN i % 997 = 1 THEN 'many' ELSE i % 1000 END, 'region', CASE WHEN i <= 10000 THEN 'north' ELSE 'south' END),
                      printf('2026-11-18T%02d:%02d:%02dZ', 10 + i / 3600, i / 60 % 60, i % 60)
                    FROM n;
                    """,
                ]))
        #expect(status == 0)
        dir.write(
            "people.yaml",
            """
            name: people
            source:
              kind: sqlite
              path: people.db
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
            transform:
              - filter: {name: no-tests, drop: {field: after.kind, equals: test}}
              - filter: {name: no-deletes, drop: {op: d}}
              - filter: {name: small, keep: {field: after.amount, lt: 700}}
              - partition_by: "region={after.region}"
              - drop: [kind]

            """)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<30 {
            let child = try Binary.start(["run", dir.path + "/people.yaml"])
            usleep(UInt32.random(in: 0..<60_000, using: &rng))
            child.signal(SIGKILL)
            _ = await child.finish()
        }
        let run = try await Binary.run(["run", dir.path + "/people.yaml"])
        #expect(run.status == 0, "\(run.stderr)")
        let verify = try await Binary.run(["verify", dir.path + "/people.yaml", "--full", "--against-source"])
        #expect(verify.status == 0 && verify.stdout.contains("clean"), "\(verify.stdout)")

        // Which changes the filters keep, computed from the source on its own.
        var kept = 0
        var rejected = 0  // an amount that is not a number meets the numeric filter: a dead letter
        var counts: [String: Int] = ["no-tests": 0, "no-deletes": 0, "small": 0]
        for i in 1...20000 {
            if i % 3 == 0 {
                counts["no-tests"]! += 1
            } else if i % 17 == 0 {
                counts["no-deletes"]! += 1
            } else if i % 997 == 1 {
                rejected += 1
            } else if i % 1000 >= 700 {
                counts["small"]! += 1
            } else {
                kept += 1
            }
        }
        let cat = try await Binary.run(["cat", dir.path + "/people.yaml"])
        let lines = cat.stdout.split(separator: "\n")
        #expect(lines.count == kept)
        #expect(!cat.stdout.contains(#""kind""#) && !cat.stdout.contains(#""op":"d""#))
        // The manifest's counts, per filter, over the live lines.
        var filtered: [String: Int] = [:]
        var records = 0
        var letters = 0
        let manifest = dir.path + "/lake/people/_feedarchive/manifest"
        for file in try FileManager.default.contentsOfDirectory(atPath: manifest).sorted() {
            for line in try String(contentsOfFile: manifest + "/" + file, encoding: .utf8).split(separator: "\n") {
                let entry = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                guard entry["kind"] as? String == "blob", entry["lineage"] as? String == "live" else { continue }
                records += entry["records"] as? Int ?? 0
                letters += entry["rejected"] as? Int ?? 0
                for (name, count) in entry["filtered"] as? [String: Int] ?? [:] { filtered[name, default: 0] += count }
            }
        }
        #expect(records == kept && filtered == counts, "\(records) \(filtered) \(counts)")
        #expect(letters == rejected && rejected > 0)
        #expect(records + filtered.values.reduce(0, +) + letters == 20000)
        // Each dead letter once, though a run killed between its two lines writes it again.
        let dead = try await Binary.run(["cat", dir.path + "/people.yaml", "--rejected"])
        #expect(dead.stdout.split(separator: "\n").count == rejected, "\(dead.stdout.prefix(300))")
        // partition_by made the folders, from a field the next step dropped.
        let folders = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/lake/people/data")
        #expect(Set(folders) == ["region=north", "region=south"], "\(folders)")
        let state = try await Binary.run(["status", dir.path + "/people.yaml"])
        #expect(
            state.stdout.contains("\(kept) changes (and \(20000 - kept - rejected) filtered out by the transform)")
                && state.stdout.contains("(and \(rejected) rejected by the transform"),
            "\(state.stdout)")
    }
}
