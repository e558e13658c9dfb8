import FeedArchive
import FeedArchivePostgres
import FeedArchiveTesting
import Foundation
import Testing

/// A restore to a point in time (or a failover to a standby that lagged) keeps the system
/// identifier and the slot, and starts a new timeline: a checkpoint read on the old timeline
/// past the fork is refused; one at or before the fork goes on.
@Suite struct TimelineTests {
    @Test func aCheckpointPastTheForkOfANewTimelineIsRefused() async throws {
        let cluster = try PostgresTestCluster(name: "timeline")
        let database = try cluster.makeDatabase()
        try cluster.psql("CREATE TABLE items (id serial PRIMARY KEY, name text)", database: database)
        let dir = TempDirectory("pg-timeline")
        let job = try JobConfig.parse(
            yaml: "name: t\n" + cluster.sourceBlock(database: database, slot: "s_timeline", tables: ["items"])
                + "\narchive: {root: lake}\n",
            file: dir.path + "/t.yaml")
        _ = try await PostgresSourceFactory.setup(job: job)
        func run() async throws -> RunSummary {
            try await ArchiveRunner(job: job, source: try PostgresSource.make(job: job)).run(RunOptions())
        }
        func insert(_ names: [String]) throws {
            try cluster.psql(
                "INSERT INTO items (name) VALUES " + names.map { "('\($0)')" }.joined(separator: ", "),
                database: database)
        }
        try insert(["a", "b", "c"])
        #expect(try await run().records == 3)

        // Restored from a backup taken at the checkpoint: timeline 2 forks after it.
        try cluster.backUp(to: dir.path + "/backup-1")
        try cluster.restoreOnNewTimeline(from: dir.path + "/backup-1")
        #expect(try cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000002")
        try insert(["d"])
        #expect(try await run().records == 1)

        // Restored from a backup taken before the last run: timeline 3 forks before the checkpoint.
        try cluster.backUp(to: dir.path + "/backup-2")
        try insert(["e", "f"])
        #expect(try await run().records == 2)
        try cluster.restoreOnNewTimeline(from: dir.path + "/backup-2")
        try insert(["g"])
        let error = await #expect(throws: FeedArchiveError.self) { _ = try await run() }
        #expect(error?.exitCode == 65)
        let text = "\(error.map { "\($0)" } ?? "")"
        #expect(text.contains("the server is on timeline 3, which left timeline 2 at"), "\(text)")
        #expect(text.contains("feedarchive epoch JOB --from beginning"))
        await #expect(throws: FeedArchiveError.self, "refused on every run until someone acts") { _ = try await run() }
    }

    @Test func historyFilesParse() {
        let forks = PostgresSource.parseHistory(
            "1\t0/3000060\tno recovery target specified\n\n2\t0/5000A28\tbefore 2026\n")
        #expect(forks.map(\.timeline) == [1, 2])
        #expect(forks.map(\.switchpoint.description) == ["0/3000060", "0/5000A28"])
    }
}
