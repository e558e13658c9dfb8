import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// A checkpoint remembers the row at its cursor and how many rows the reads behind it found;
/// the next run refuses when either changed, and the epoch its hint names archives what the
/// reads missed.
@Suite struct SequenceReuseTests {
    func job(_ dir: TempDirectory, sequence: String = "rowid") throws -> JobConfig {
        try JobConfig.parse(
            yaml: """
                name: t
                source: {kind: sqlite, path: feed.db, table: outbox, sequence_column: \(sequence), document_column: doc}
                archive: {root: lake}
                """, file: dir.path + "/t.yaml")
    }

    func run(_ job: JobConfig) async throws -> RunSummary {
        try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
    }

    func refusal(_ job: JobConfig) async -> FeedArchiveError? {
        await #expect(throws: FeedArchiveError.self) { _ = try await run(job) }
    }

    func documents(_ job: JobConfig) throws -> Set<String> {
        Set(
            try archivedLines(job).map { line in
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return "\((object["after"] as? [String: Any])?["n"] ?? "?")"
            })
    }

    @Test func aRowCommittedBelowTheCursorIsRefusedAndTheHintedEpochArchivesIt() async throws {
        let dir = TempDirectory("late-row")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, doc TEXT)")
        let job = try job(dir, sequence: "id")
        try writer.exec(#"INSERT INTO outbox VALUES (100, '{"n":100}')"#)
        _ = try await run(job)
        try writer.exec(#"INSERT INTO outbox VALUES (102, '{"n":102}')"#)
        _ = try await run(job)
        try writer.exec(#"INSERT INTO outbox VALUES (101, '{"n":101}')"#)

        let error = try #require(await refusal(job))
        #expect(error.exitCode == 65)
        #expect("\(error)".contains("1 row(s) of outbox with id between 101 and 102 (the last batch) appeared"))
        #expect(error.hint?.contains("feedarchive epoch JOB --from seq=100") == true)
        #expect(await refusal(job) != nil, "refused on every run until someone acts")

        _ = try await Epoch.start(
            job: job, from: .parse("seq=100"), reason: "late rows", source: .source(SQLiteSource.make(job: job)))
        #expect(try await run(job).records == 2)
        #expect(try documents(job) == ["100", "101", "102"])
        #expect(try Verifier(job: job).verify(deep: true).isClean)
        try writer.exec(#"INSERT INTO outbox VALUES (103, '{"n":103}')"#)
        #expect(try await run(job).records == 1)
    }

    @Test func rowsDeletedBelowTheCursorAreNoReasonToRefuse() async throws {
        let dir = TempDirectory("late-row-deleted")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT)")
        let job = try job(dir, sequence: "id")
        for n in 1...6 { try writer.exec(#"INSERT INTO outbox(doc) VALUES ('{"n":\#(n)}')"#) }
        _ = try await run(job)
        try writer.exec("DELETE FROM outbox WHERE id <= 3")
        try writer.exec(#"INSERT INTO outbox(doc) VALUES ('{"n":7}')"#)
        #expect(try await run(job).records == 1)
    }

    @Test func rowidsRenumberedByVacuumAreRefusedAndTheHintedEpochArchivesTheNewRows() async throws {
        let dir = TempDirectory("vacuum")
        let writer = try OutboxWriter(path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (doc TEXT)")
        let job = try job(dir)
        for n in 1...10 { try writer.exec(#"INSERT INTO outbox VALUES ('{"n":\#(n)}')"#) }
        _ = try await run(job)
        try writer.exec("DELETE FROM outbox WHERE rowid <= 8")
        try writer.exec("VACUUM")
        for n in 11...20 { try writer.exec(#"INSERT INTO outbox VALUES ('{"n":\#(n)}')"#) }

        let error = try #require(await refusal(job))
        #expect(error.exitCode == 65)
        #expect("\(error)".contains("the change at rowid 10 in outbox is not the change archived there"))
        #expect(error.hint?.contains("feedarchive epoch JOB --from beginning") == true)

        _ = try await Epoch.start(
            job: job, from: .beginning, reason: "vacuum", source: .source(SQLiteSource.make(job: job)))
        _ = try await run(job)
        #expect(try documents(job) == Set((1...20).map(String.init)))
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func aTableDroppedAndRecreatedIsRefusedOnceItHasGrownPastTheCursor() async throws {
        let dir = TempDirectory("recreated")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT)")
        let job = try job(dir, sequence: "id")
        for n in 1...5 { try writer.exec(#"INSERT INTO outbox(doc) VALUES ('{"n":\#(n)}')"#) }
        _ = try await run(job)
        try writer.exec("DROP TABLE outbox")
        try writer.exec("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT)")
        for n in 6...12 { try writer.exec(#"INSERT INTO outbox(doc) VALUES ('{"n":\#(n)}')"#) }
        let error = try #require(await refusal(job))
        #expect("\(error)".contains("the change at id 5 in outbox is not the change archived there"))
    }

    @Test func theNewestRowDeletedAndItsRowidHandedOutAgainIsRefused() async throws {
        let dir = TempDirectory("rowid-reused")
        let writer = try OutboxWriter(path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (doc TEXT)")
        let job = try job(dir)
        for n in 1...3 { try writer.exec(#"INSERT INTO outbox VALUES ('{"n":\#(n)}')"#) }
        _ = try await run(job)
        try writer.exec("DELETE FROM outbox WHERE rowid = 3")
        try writer.exec(#"INSERT INTO outbox VALUES ('{"n":4}')"#)  // rowid 3 again
        #expect(try #require(await refusal(job)).exitCode == 65)
    }

    @Test func aColumnAddedToTheTableIsNoReuse() async throws {
        let dir = TempDirectory("column-added")
        let writer = try OutboxWriter(path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (doc TEXT)")
        let job = try job(dir)
        for n in 1...3 { try writer.exec(#"INSERT INTO outbox VALUES ('{"n":\#(n)}')"#) }
        _ = try await run(job)
        try writer.exec("ALTER TABLE outbox ADD COLUMN extra TEXT")
        try writer.exec(#"INSERT INTO outbox VALUES ('{"n":4}', 'x')"#)
        #expect(try await run(job).records == 1)
    }

    @Test func blobNamesAreKeptWhenAnEpochRereadsTheSamePositionsWithOtherRows() async throws {
        let dir = TempDirectory("same-name")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, doc TEXT)")
        let job = try job(dir, sequence: "id")
        try writer.exec(#"INSERT INTO outbox VALUES (1, '{"n":1}'), (3, '{"n":3}')"#)
        _ = try await run(job)
        try writer.exec(#"INSERT INTO outbox VALUES (2, '{"n":2}')"#)
        _ = try await Epoch.start(job: job, from: .beginning, reason: "r", source: .source(SQLiteSource.make(job: job)))
        _ = try await run(job)
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let paths = archive.manifest.entries.compactMap(\.path)
        #expect(paths.count == 2)
        #expect(paths[1].hasPrefix(paths[0].replacingOccurrences(of: ".jsonl.zst", with: "-")))
        #expect(try documents(job) == ["1", "2", "3"])
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func anOutboxMarkingItsRowsPublishedIsNoReuse() async throws {
        for schema in [
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT, published INTEGER DEFAULT 0)",
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, doc TEXT, published INTEGER DEFAULT 0)",
        ] {
            let dir = TempDirectory("published")
            let writer = try OutboxWriter(path: dir.path + "/feed.db", schema: schema)
            let job = try job(dir, sequence: "id")
            for n in 1...3 { try writer.exec(#"INSERT INTO outbox(doc) VALUES ('{"n":\#(n)}')"#) }
            _ = try await run(job)
            try writer.exec("UPDATE outbox SET published = 1")
            try writer.exec(#"INSERT INTO outbox(doc) VALUES ('{"n":4}')"#)
            #expect(try await run(job).records == 1, "\(schema)")
            try writer.exec("UPDATE outbox SET published = 1")
            #expect(try await run(job).records == 0, "\(schema)")
        }
    }

    func wholeRowJob(_ dir: TempDirectory) throws -> JobConfig {
        try JobConfig.parse(
            yaml: """
                name: t
                source: {kind: sqlite, path: feed.db, table: outbox, sequence_column: id}
                archive: {root: lake}
                """, file: dir.path + "/t.yaml")
    }

    @Test func aWholeRowAutoincrementTableMayUpdateItsRowsInPlace() async throws {
        let dir = TempDirectory("whole-row-autoincrement")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db",
            schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, published INTEGER DEFAULT 0)"
        )
        let job = try wholeRowJob(dir)
        try writer.exec("INSERT INTO outbox(n) VALUES (1), (2)")
        _ = try await run(job)
        try writer.exec("UPDATE outbox SET published = 1")
        try writer.exec("INSERT INTO outbox(n) VALUES (3)")
        #expect(try await run(job).records == 1)
    }

    @Test func aWholeRowRowidTableUpdatedAtTheCursorIsRefusedAndTheHintGoesOnAfterIt() async throws {
        let dir = TempDirectory("whole-row-updated")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db",
            schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY, n INTEGER, published INTEGER DEFAULT 0)")
        let job = try wholeRowJob(dir)
        try writer.exec("INSERT INTO outbox(n) VALUES (1), (2)")
        _ = try await run(job)
        try writer.exec("UPDATE outbox SET published = 1")
        try writer.exec("INSERT INTO outbox(n) VALUES (3)")
        let error = try #require(await refusal(job))
        #expect(error.exitCode == 65)
        #expect("\(error)".contains("the whole row differs"))
        #expect(error.hint?.contains("feedarchive epoch JOB --from seq=2 --reason \"row updated\"") == true)
        _ = try await Epoch.start(
            job: job, from: .parse("seq=2"), reason: "row updated", source: .source(SQLiteSource.make(job: job)))
        #expect(try await run(job).records == 1)
    }

    @Test func aDrainedAutoincrementOutboxGoesOn() async throws {
        let dir = TempDirectory("drained")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db", schema: "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT)")
        let job = try job(dir, sequence: "id")
        for n in 1...4 { try writer.exec(#"INSERT INTO outbox(doc) VALUES ('{"n":\#(n)}')"#) }
        _ = try await run(job)
        try writer.exec("DELETE FROM outbox")
        #expect(try await run(job).records == 0)
        try writer.exec("INSERT INTO outbox(doc) VALUES ('{\"n\":5}')")
        #expect(try await run(job).records == 1)
        #expect(try documents(job) == ["1", "2", "3", "4", "5"])
    }

    @Test func aLateRowIsSeenWhenOldRowsWerePrunedFromTheWindow() async throws {
        let dir = TempDirectory("late-and-pruned")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db",
            schema: "CREATE TABLE outbox (pk INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER NOT NULL UNIQUE, doc TEXT)")
        let job = try job(dir, sequence: "id")
        try writer.exec(#"INSERT INTO outbox(id, doc) VALUES (1, '{"n":1}'), (2, '{"n":2}'), (3, '{"n":3}')"#)
        _ = try await run(job)
        try writer.exec(#"INSERT INTO outbox(id, doc) VALUES (5, '{"n":5}')"#)
        _ = try await run(job)
        // One old row pruned, one late row committed: the count behind the cursor is unchanged.
        try writer.exec("DELETE FROM outbox WHERE id = 1")
        try writer.exec(#"INSERT INTO outbox(id, doc) VALUES (4, '{"n":4}')"#)
        let error = try #require(await refusal(job))
        #expect("\(error)".contains("between 4 and 5 (the last batch)"))
    }

    @Test func theWindowSlidesInsteadOfForgettingTheRowsBehindTheCursor() async throws {
        let dir = TempDirectory("window-slides")
        let writer = try OutboxWriter(
            path: dir.path + "/feed.db",
            schema: "CREATE TABLE outbox (pk INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER NOT NULL UNIQUE, doc TEXT)")
        let job = try job(dir, sequence: "id")
        // 9,999 rows; id 9999 is still in the application's open transaction.
        try writer.exec(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 9998) INSERT INTO outbox(id, doc) SELECT n, '{}' FROM c"
        )
        try writer.exec("INSERT INTO outbox(id, doc) VALUES (10000, '{}')")
        _ = try await run(job)
        try writer.exec("INSERT INTO outbox(id, doc) VALUES (10001, '{}'), (10002, '{}')")
        _ = try await run(job)
        try writer.exec(#"INSERT INTO outbox(id, doc) VALUES (9999, '{"late":true}')"#)
        let error = try #require(await refusal(job))
        #expect("\(error)".contains("(the rows read before it)"))
    }
}
