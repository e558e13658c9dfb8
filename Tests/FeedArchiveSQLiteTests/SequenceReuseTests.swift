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
        #expect("\(error)".contains("1 row(s) of outbox with id between 100 and 102 appeared"))
        #expect(error.hint?.contains("feedarchive epoch JOB --from seq=99") == true)
        #expect(await refusal(job) != nil, "refused on every run until someone acts")

        _ = try await Epoch.start(
            job: job, from: .parse("seq=99"), reason: "late rows", source: .source(SQLiteSource.make(job: job)))
        #expect(try await run(job).records == 3)
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
        #expect("\(error)".contains("the row at rowid 10 in outbox is not the row archived there"))
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
        #expect("\(error)".contains("the row at id 5 in outbox is not the row archived there"))
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
}
