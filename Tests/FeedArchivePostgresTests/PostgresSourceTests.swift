import FeedArchive
import FeedArchivePostgres
import FeedArchiveTesting
import Foundation
import Testing

/// A database of the shared test cluster with one published table and a slot.
struct PostgresFixture {
    let cluster: PostgresTestCluster
    let database: String
    let slot: String

    init(table: String = "CREATE TABLE items (id serial PRIMARY KEY, name text, qty int)", tables: [String] = ["items"])
        throws
    {
        cluster = try PostgresTestCluster.shared()
        database = try cluster.makeDatabase()
        slot = "s_" + database
        try cluster.psql(table, database: database)
        self.tables = tables
    }

    let tables: [String]

    /// The source settings, with `extra` lines (`key: value`) added or replacing the defaults.
    func settings(_ extra: String = "") throws -> PostgresSourceSettings {
        let create = !extra.contains("create: false")
        let extra = extra.replacingOccurrences(of: "create: false", with: "")
        let replaced = Set(extra.split(separator: "\n").compactMap { $0.split(separator: ":").first.map(String.init) })
        let yaml =
            cluster.sourceBlock(database: database, slot: slot, tables: tables, create: create).replacingOccurrences(
                of: "source:\n", with: ""
            )
            .split(separator: "\n").map { $0.dropFirst(2) }.filter { line in
                !replaced.contains(String(line.prefix { $0 != ":" }))
            }
            .joined(separator: "\n") + "\n" + extra
        return try PostgresSourceSettings.parse(try ConfigNode.parse(yaml: yaml, file: "/tmp/job.yaml"))
    }

    func source(_ extra: String = "") throws -> PostgresSource { PostgresSource(settings: try settings(extra)) }

    @discardableResult func sql(_ text: String) throws -> String { try cluster.psql(text, database: database) }

    /// Every record from `token` to the head, in pages of `pageSize`.
    func readAll(_ source: PostgresSource, from token: ContinuationToken, pageSize: Int = 1000) async throws -> (
        records: [FeedRecord], pages: [FeedPage]
    ) {
        let head = try await source.head(for: token)["0"]!
        var cursor = token.cursors["0"]!
        var records: [FeedRecord] = []
        var pages: [FeedPage] = []
        while true {
            let page = try await source.readPage(partition: "0", after: cursor, through: head, maxRecords: pageSize)
            if page.records.isEmpty { break }
            pages.append(page)
            records += page.records
            cursor = page.next!
        }
        return (records, pages)
    }
}

func envelope(_ record: FeedRecord) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(record.line)) as? [String: Any])
}

/// `append` = transactions of one or two inserted rows, as the suite asks.
final class PostgresConformanceFeed: ConformanceFeed {
    let fixture: PostgresFixture
    /// Extra source settings, e.g. `read_mode: peek`.
    let extra: String
    init(extra: String = "") async throws {
        fixture = try PostgresFixture()
        self.extra = extra
        try await fixture.source().setup()
    }
    func makeSource() async throws -> any FeedSource { try fixture.source(extra) }
    func append(_ count: Int) async throws {
        var sql = ""
        var left = count
        var index = 0
        while left > 0 {
            let size = left >= 2 && index % 3 == 0 ? 2 : 1
            sql +=
                "BEGIN; " + String(repeating: "INSERT INTO items (name, qty) VALUES ('x', \(index)); ", count: size)
                + "COMMIT;\n"
            left -= size
            index += 1
        }
        try fixture.sql(sql)
    }
}

@Suite(.serialized) struct PostgresSourceTests {
    @Test func passesTheConformanceSuite() async throws {
        let checks = try await FeedSourceConformance.run(try await PostgresConformanceFeed())
        #expect(checks.contains("resume-exact") && checks.contains("head-is-stop-target") && checks.count >= 15)
    }

    @Test func everyOperationBecomesAnEnvelope() async throws {
        let fixture = try PostgresFixture(
            table: """
                CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
                CREATE TABLE audit (k text PRIMARY KEY, v text);
                ALTER TABLE audit REPLICA IDENTITY FULL;
                """, tables: ["items", "audit"])
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.now)
        try fixture.sql(
            """
            INSERT INTO items VALUES (1, 'one', 10), (2, 'two', 20);
            UPDATE items SET qty = 11 WHERE id = 1;
            UPDATE items SET id = 3 WHERE id = 2;
            DELETE FROM items WHERE id = 1;
            INSERT INTO audit VALUES ('a', 'x');
            UPDATE audit SET v = 'y';
            DELETE FROM audit;
            TRUNCATE items;
            """)
        let (records, _) = try await fixture.readAll(source, from: start)
        let envelopes = try records.map(envelope)
        #expect(envelopes.map { $0["op"] as? String } == ["c", "c", "u", "u", "d", "c", "u", "d", "t"])
        #expect(envelopes[0]["key"] as? [String: Int] == ["id": 1])
        #expect(envelopes[0]["after"] as? NSDictionary == ["id": 1, "name": "one", "qty": 10])
        #expect(envelopes[2]["after"] as? NSDictionary == ["id": 1, "name": "one", "qty": 11])
        // A key change: the new key, and the old one in source.old_key (the row is not known without FULL).
        #expect(envelopes[3]["key"] as? [String: Int] == ["id": 3])
        #expect((envelopes[3]["source"] as? [String: Any])?["old_key"] as? [String: Int] == ["id": 2])
        #expect(envelopes[4]["key"] as? [String: Int] == ["id": 1])
        #expect(envelopes[4]["after"] is NSNull)
        // REPLICA IDENTITY FULL: the whole old row.
        #expect(envelopes[6]["before"] as? NSDictionary == ["k": "a", "v": "x"])
        #expect(envelopes[6]["after"] as? NSDictionary == ["k": "a", "v": "y"])
        #expect(envelopes[7]["before"] as? NSDictionary == ["k": "a", "v": "y"])
        let truncate = try #require(envelopes[8]["source"] as? [String: Any])
        #expect(truncate["table"] as? String == "public.items")
        for (index, item) in envelopes.enumerated() {
            let source = try #require(item["source"] as? [String: Any])
            #expect(source["xid"] is Int && source["lsn"] is String, "record \(index)")
            #expect((item["ts"] as? String)?.hasSuffix("Z") == true)
            #expect(item["pos"] as? String == records[index].position.rawValue)
        }
        // Positions: commit LSN + index; the last change of each transaction carries the cursor.
        #expect(records.map(\.position.rawValue.count).allSatisfy { $0 == 25 })
        #expect(zip(records, records.dropFirst()).allSatisfy { $0.position < $1.position })
        #expect(records[0].cursor == nil && records[1].cursor != nil)
    }

    @Test func everyTypeBecomesJSON() async throws {
        let fixture = try PostgresFixture(
            table: """
                CREATE TYPE mood AS ENUM ('sad', 'happy');
                CREATE TABLE types (
                  id int PRIMARY KEY, i2 smallint, i8 bigint, f4 real, f8 double precision, fnan float8, finf float8, fminf float8,
                  n numeric, b boolean, t text, vc varchar(10), j json, jb jsonb, by bytea, d date, ts timestamp, tstz timestamptz,
                  tm time, iv interval, u uuid, m mood, ai int[], at text[], a2 int[][], ajb jsonb[], nul text, big text);
                ALTER TABLE types ALTER COLUMN big SET STORAGE EXTERNAL;
                """, tables: ["types"])
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.now)
        try fixture.sql(
            """
            SET TimeZone = 'Europe/Berlin';
            INSERT INTO types VALUES (1, -7, 9007199254740993, 1.5, 2.25e300, 'NaN', 'Infinity', '-Infinity',
              123456789012345678901234567890.123, true, E'quote " back \\\\ nl \n', 'v', E'{"a":\n [1, 2]\r\n}', '{"b": null}', '\\x00ff10',
              '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+01', '13:14:15', '1 day 2 hours', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
              'happy', '{1,NULL,3}', '{"a b","c\\"d",NULL,e}', '{{1,2},{3,4}}', ARRAY['{"x":1}'::jsonb], NULL, repeat('z', 10000));
            UPDATE types SET i2 = 8 WHERE id = 1;
            """)
        let (records, _) = try await fixture.readAll(source, from: start)
        #expect(records.count == 2)
        // A json value typed on several lines stays on the envelope's one line.
        #expect(!records[0].line.contains(0x0A) && !records[0].line.contains(0x0D))
        let after = try #require(try envelope(records[0])["after"] as? [String: Any])
        #expect(after["i2"] as? Int == -7)
        #expect(after["i8"] as? Int64 == 9007199254740993)
        #expect(after["f4"] as? Double == 1.5)
        #expect(after["f8"] as? Double == 2.25e300)
        #expect(after["fnan"] as? String == "NaN")
        #expect(after["finf"] as? String == "Infinity")
        #expect(after["fminf"] as? String == "-Infinity")
        #expect(after["n"] as? String == "123456789012345678901234567890.123")
        #expect(after["b"] as? Bool == true)
        #expect(after["t"] as? String == "quote \" back \\ nl \n")
        #expect(after["vc"] as? String == "v")
        #expect((after["j"] as? [String: Any])?["a"] as? [Int] == [1, 2])
        #expect((after["jb"] as? [String: Any])?["b"] is NSNull)
        #expect(after["by"] as? String == Data([0x00, 0xFF, 0x10]).base64EncodedString())
        #expect(after["d"] as? String == "2024-02-29")
        #expect(after["ts"] as? String == "2024-02-29T13:14:15.123456")
        #expect(after["tstz"] as? String == "2024-02-29T12:14:15Z")
        #expect(after["tm"] as? String == "13:14:15")
        #expect(after["iv"] as? String == "1 day 02:00:00")
        #expect(after["u"] as? String == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        #expect(after["m"] as? String == "happy")
        #expect((after["ai"] as? [Any]).map { "\($0)" } == "[1, <null>, 3]")
        #expect((after["at"] as? [Any]).map { "\($0)" } == #"["a b", "c\"d", <null>, "e"]"#)
        #expect(after["a2"] as? [[Int]] == [[1, 2], [3, 4]])
        #expect(((after["ajb"] as? [Any])?.first as? [String: Int]) == ["x": 1])
        #expect(after["nul"] is NSNull)
        #expect((after["big"] as? String)?.count == 10000)
        // The update did not touch the TOASTed column: it is left out and named as unchanged.
        let update = try envelope(records[1])
        let updated = try #require(update["after"] as? [String: Any])
        #expect(updated["i2"] as? Int == 8)
        #expect(updated["big"] == nil)
        #expect((update["source"] as? [String: Any])?["unchanged_toast"] as? [String] == ["big"])
    }

    @Test func aTransactionLargerThanAPageStreamsInPages() async throws {
        let fixture = try PostgresFixture()
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.now)
        try fixture.sql(
            "INSERT INTO items (name, qty) SELECT 'n', g FROM generate_series(1, 5000) g; INSERT INTO items (name, qty) VALUES ('after', 0);"
        )
        let (records, pages) = try await fixture.readAll(source, from: start, pageSize: 700)
        #expect(records.count == 5001)
        #expect(pages.allSatisfy { $0.records.count <= 700 })
        // Pages inside the big transaction end without a cursor and say where to resume.
        #expect(pages.dropLast().contains { $0.records.last?.cursor == nil && $0.resume != nil })
        #expect(records.filter { $0.cursor != nil }.count == 2)
        #expect(Set(records.map(\.position)).count == 5001)
        #expect(zip(records, records.dropFirst()).allSatisfy { $0.position < $1.position })
    }

    @Test func aRedeliveredTransactionIsSkippedByPosition() async throws {
        // The server forgets an advance (crash before its slot state was saved): the peek
        // returns transactions the checkpoint already passed. They must not come back.
        let fixture = try PostgresFixture()
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.beginning)
        try fixture.sql(
            "INSERT INTO items (name) VALUES ('a'); INSERT INTO items (name) VALUES ('b'); INSERT INTO items (name) VALUES ('c');"
        )
        let all = try await fixture.readAll(source, from: start).records
        #expect(all.count == 3)
        // A source that is never acknowledged (verify, backfill) lets the slot go at the head.
        let active = try fixture.sql("SELECT active FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
        #expect(active == "f")
        let afterFirst = start.advancing("0", to: all[0].cursor!)
        // The slot was not advanced: a new source reading after the first cursor skips it.
        let fresh = try fixture.source()
        defer { Task { await fresh.close() } }
        let rest = try await fixture.readAll(fresh, from: afterFirst).records
        #expect(rest.map(\.position) == Array(all[1...].map(\.position)))
    }

    @Test func acknowledgeAdvancesTheSlotAndContinuityGuardsIt() async throws {
        let fixture = try PostgresFixture()
        let source = try fixture.source()
        defer { Task { await source.close() } }
        try await source.setup()
        let start = try await source.resolve(.beginning)
        try fixture.sql("INSERT INTO items (name) VALUES ('a'), ('b');")
        try await source.acknowledge(start)  // as a live run does at its start
        let records = try await fixture.readAll(source, from: start).records
        let token = start.advancing("0", to: records.last!.cursor!)
        // Read to the head by a source that is acknowledged, the stream stays open until this
        // acknowledgement: it goes out as a status update, then the stream ends, freeing the slot.
        #expect(try fixture.sql("SELECT active FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'") == "t")
        try await source.acknowledge(token)
        let confirmed = try fixture.sql(
            "SELECT confirmed_flush_lsn || ' ' || active FROM pg_replication_slots WHERE slot_name = '\(fixture.slot)'")
        #expect(confirmed == records.last!.cursor! + " false")
        try await source.checkContinuity(from: token)
        // The checkpoint behind the slot: something else consumed it.
        await #expect(throws: FeedArchiveError.self) { try await source.checkContinuity(from: start) }
        // A dropped slot is refused with 65 and the way out.
        try fixture.sql("SELECT pg_drop_replication_slot('\(fixture.slot)')")
        let noCreate = try fixture.source("create: false")
        defer { Task { await noCreate.close() } }
        do {
            try await noCreate.checkContinuity(from: token)
            Issue.record("a dropped slot was accepted")
        } catch let error as FeedArchiveError {
            #expect(error.exitCode == 65)
            #expect("\(error)".contains("does not exist") && "\(error)".contains("feedarchive epoch"))
        }
    }

    @Test func anotherDatabaseIsAnotherIdentity() async throws {
        let one = try PostgresFixture()
        let two = try PostgresFixture()
        let a = try one.source()
        let b = try two.source()
        defer {
            Task {
                await a.close()
                await b.close()
            }
        }
        try await a.setup()
        try await b.setup()
        let identityA = try await a.identity()
        let identityB = try await b.identity()
        #expect(identityA.facts["system_identifier"] == identityB.facts["system_identifier"])
        #expect(identityA.fingerprint != identityB.fingerprint)
        let token = try await a.resolve(.now)
        await #expect(throws: FeedArchiveError.self) { try await b.resolve(.token(token.encoded)) }
    }

    @Test func settingsErrorsNameTheLine() throws {
        let yaml = "kind: postgres\ndatabase: shop\nslot: Bad-Slot\n"
        do {
            _ = try PostgresSourceSettings.parse(try ConfigNode.parse(yaml: yaml, file: "/tmp/job.yaml"))
            Issue.record("a bad slot name was accepted")
        } catch let error as FeedArchiveError {
            #expect(error.exitCode == 78)
            #expect("\(error)".hasPrefix("/tmp/job.yaml:3:7:"))
        }
        let missing = "kind: postgres\nslot: s\n"
        #expect(throws: FeedArchiveError.self) {
            try PostgresSourceSettings.parse(try ConfigNode.parse(yaml: missing, file: "/tmp/job.yaml"))
        }
        let unknown = "kind: postgres\ndatabase: d\nslot: s\nslots: x\n"
        #expect(throws: FeedArchiveError.self) {
            try PostgresSourceSettings.parse(try ConfigNode.parse(yaml: unknown, file: "/tmp/job.yaml"))
        }
    }
}
