import FeedArchive
import Foundation
import Testing

/// `feedarchive compact` on a real SQLite archive: killed with SIGKILL at any point, the next
/// compaction finishes the job; every change stays archived once, in order, and verify is clean.
@Suite struct CompactEndToEndTests {
    @Test func compactKilledAtAnyPointLosesNothing() async throws {
        let shop = ShopJob(maxRecords: 50, pageSize: 50)
        // Three hours and twenty minutes of changes, in 120 blobs of 50: about 36 an hour.
        try ShopFeed.create(shop.db, count: 6_000, rate: 0.5)
        var runs = 0
        while true {
            let run = try await Binary.run(["run", shop.job, "--max-records", "500"])
            #expect(run.status == 0, "\(run.stderr)")
            runs += 1
            if run.stderr.contains(" 0 changes") || runs > 20 { break }
        }
        let expected = try await shop.archivedSequences()
        #expect(expected == (1...6_000).map { Int64($0) })
        let pristine = shop.dir.path + "/pristine"
        try FileManager.default.copyItem(atPath: shop.jobRoot, toPath: pristine)
        let blobs = shop.files(under: shop.jobRoot + "/data").filter { $0.hasSuffix(".zst") }.count

        var interrupted = 0
        for delay in stride(from: 0, to: 90_000, by: 4_500) {
            try FileManager.default.removeItem(atPath: shop.jobRoot)
            try FileManager.default.copyItem(atPath: pristine, toPath: shop.jobRoot)
            let compact = try Binary.start(["compact", shop.job, "--after", "0s", "--target-size", "64KiB"])
            usleep(UInt32(delay))
            compact.signal(SIGKILL)
            if await compact.finish().status != 0 { interrupted += 1 }
            // What the manifest names is whole at every point.
            #expect(try await shop.archivedSequences() == expected, "killed after \(delay / 1000) ms")
            let again = try await Binary.run(["compact", shop.job, "--after", "0s", "--target-size", "64KiB"])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(try await shop.archivedSequences() == expected, "killed after \(delay / 1000) ms")
            let verify = try await Binary.run(["verify", shop.job, "--deep", "--full"])
            #expect(verify.status == 0, "killed after \(delay / 1000) ms: \(verify.stdout)")
            #expect(!verify.stdout.contains("replaced by a compacted blob"), "\(verify.stdout)")
            let left = shop.files(under: shop.jobRoot + "/data").filter { $0.hasSuffix(".zst") }.count
            #expect(left < blobs / 4, "\(left) of \(blobs) blobs left")
        }
        #expect(interrupted >= 3, "only \(interrupted) compactions were killed before they ended")
        // DuckDB reads the compacted lake with the README's query: each change once.
        let root = shop.jobRoot
        let manifest =
            "read_json('\(root)/_feedarchive/manifest/*.jsonl', columns = {seq: 'BIGINT', kind: 'VARCHAR', path: 'VARCHAR', replaces: 'BIGINT[]'})"
        let count = try RunEndToEndTests().duckdb(
            """
            SELECT count(*), count(DISTINCT pos) FROM read_json('\(root)/data/**/*.jsonl.zst', filename = true)
            WHERE filename IN (SELECT '\(root)/' || path FROM \(manifest) WHERE kind IN ('blob', 'compact')
              AND seq NOT IN (SELECT unnest(replaces) FROM \(manifest) WHERE kind IN ('compact', 'prune')))
            """)
        #expect(count == "(6000, 6000)", "duckdb says \(count)")
        // Or with the live file list the commands keep.
        let listed = try RunEndToEndTests().duckdb(
            """
            SELECT count(*), count(DISTINCT pos) FROM read_json('\(root)/data/**/*.jsonl.zst', filename = true)
            WHERE filename IN (SELECT '\(root)/' || path FROM read_csv('\(root)/_feedarchive/files.txt', delim = '\t', header = true))
            """)
        #expect(listed == "(6000, 6000)", "duckdb says \(listed)")
        // The job goes on: a later run and verify.
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        #expect(try await Binary.run(["verify", shop.job, "--deep"]).status == 0)
    }

    /// `feedarchive prune --yes` killed with SIGKILL at any point: what the manifest names is
    /// whole (all of it before the `prune` line, the changes after the cut once it is there),
    /// the next prune deletes what the stopped one left, and verify is clean.
    @Test func pruneKilledAtAnyPointLosesNothingAfterTheCut() async throws {
        let shop = ShopJob(maxRecords: 50, pageSize: 50)
        // 11:06 to 14:26, 120 blobs; the hours 11 and 12 are closed and before the cut.
        try ShopFeed.create(shop.db, count: 6_000, rate: 0.5)
        var runs = 0
        while runs < 20 {
            let run = try await Binary.run(["run", shop.job, "--max-records", "500"])
            #expect(run.status == 0, "\(run.stderr)")
            runs += 1
            if run.stderr.contains(" 0 changes") { break }
        }
        let all = try await shop.archivedSequences()
        #expect(all == (1...6_000).map { Int64($0) })
        let pristine = shop.dir.path + "/pristine"
        try FileManager.default.copyItem(atPath: shop.jobRoot, toPath: pristine)
        let prune = ["prune", shop.job, "--before", "2026-11-18T13:00:00Z"]

        let dry = try await Binary.run(prune)
        #expect(dry.status == 0 && dry.stderr.contains("dry run") && dry.stderr.contains("--yes"), "\(dry.stderr)")
        #expect(try await shop.archivedSequences() == all)
        let whole = try await Binary.run(prune + ["--yes"])
        #expect(whole.status == 0, "\(whole.stderr)")
        let kept = try await shop.archivedSequences()
        // Changes are 2 s apart from 11:06:40: those from 13:00:00 on stay (the blob holding
        // 12:59:xx and 13:00:00 stays whole).
        #expect(kept.last == 6_000 && kept.count < 4_000 && kept.count >= 6_000 - 3_400 + 1 - 50, "\(kept.count)")
        #expect(kept == Array(all.suffix(kept.count)))
        let after = try await Binary.run(["verify", shop.job, "--deep", "--full"])
        #expect(after.status == 0, "\(after.stdout)")

        var interrupted = 0
        for delay in stride(from: 0, to: 60_000, by: 5_000) {
            try FileManager.default.removeItem(atPath: shop.jobRoot)
            try FileManager.default.copyItem(atPath: pristine, toPath: shop.jobRoot)
            try? FileManager.default.removeItem(atPath: shop.jobRoot + "/_feedarchive/verified.json")
            let child = try Binary.start(prune + ["--yes"])
            usleep(UInt32(delay))
            child.signal(SIGKILL)
            if await child.finish().status != 0 { interrupted += 1 }
            let seen = try await shop.archivedSequences()
            #expect(seen == all || seen == kept, "killed after \(delay / 1000) ms: \(seen.count) changes")
            let again = try await Binary.run(prune + ["--yes"])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(try await shop.archivedSequences() == kept, "killed after \(delay / 1000) ms")
            let verify = try await Binary.run(["verify", shop.job, "--deep", "--full"])
            #expect(verify.status == 0, "killed after \(delay / 1000) ms: \(verify.stdout)")
            #expect(!verify.stdout.contains("still there"), "\(verify.stdout)")
        }
        #expect(interrupted >= 3, "only \(interrupted) prunes were killed before they ended")
        // The job goes on.
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        #expect(try await Binary.run(["verify", shop.job, "--deep"]).status == 0)
    }

    /// `compact:` in the job: one cron line archives, compacts what closed, and marks each
    /// closed bucket `_SUCCESS` with the watermark in `_feedarchive/watermark.json`.
    @Test func runWithACompactSettingKeepsTheLakeCompactedAndMarked() async throws {
        let shop = ShopJob(maxRecords: 1_000, pageSize: 100, extraSource: "compact:\n  after: 0s\n")
        // Four hours and ten minutes, archived 150 changes at a time: about four blobs an hour.
        try ShopFeed.create(shop.db, count: 3_000, rate: 0.2)
        var compactions = 0
        for _ in 0..<30 {
            let run = try await Binary.run(["run", shop.job, "--max-records", "150"])
            #expect(run.status == 0, "\(run.stderr)")
            if run.stderr.contains("compacted") { compactions += 1 }
            if run.stderr.contains(" 0 changes") { break }
        }
        #expect(compactions >= 3)
        #expect(try await shop.archivedSequences() == (1...3_000).map { Int64($0) })
        let data = shop.jobRoot + "/data"
        let folders = Set(shop.files(under: data).filter { $0.hasSuffix(".zst") }.map(parentDirectory(of:)))
        let marked = Set(shop.files(under: data).filter { $0.hasSuffix("/_SUCCESS") }.map(parentDirectory(of:)))
        // Every hour but the last is closed: marked, and one blob.
        #expect(marked.count == folders.count - 1, "\(marked.sorted()) of \(folders.sorted())")
        for folder in marked {
            let blobs = shop.files(under: data + "/" + folder).filter { $0.hasSuffix(".zst") }
            #expect(blobs.count == 1, "\(folder): \(blobs)")
        }
        let watermark = try String(contentsOfFile: shop.jobRoot + "/_feedarchive/watermark.json", encoding: .utf8)
        #expect(watermark.contains(#""through""#))
        for extra in [[], ["--full"]] {
            let verify = try await Binary.run(["verify", shop.job, "--deep"] + extra)
            #expect(verify.status == 0, "\(verify.stdout)")
        }
    }
}
