import FeedArchive
import FeedArchiveTesting
import Foundation
import Glibc
import Testing

/// Each kind of bad input gets its documented exit code and a message naming the file and
/// place, and loses nothing.
@Suite struct BadInputEndToEndTests {
    @Test func versionIsPrintedAndUnknownOptionsExit64() async throws {
        let version = try await Binary.run(["--version"])
        #expect(version.status == 0)
        #expect(
            version.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                == "feedarchive \(FeedArchiveVersion.current)")
        let unknown = try await Binary.run(["--no-such-option"])
        #expect(unknown.status == 64, "\(unknown.stderr)")
    }

    @Test func badJobFileExits78WithLineAndColumn() async throws {
        let dir = TempDirectory()
        let file = dir.write(
            "bad.yaml",
            "name: bad\nsource:\n  kind: sqlite\n  path: x.db\n  table: t\narchive:\n  root: lake\n  compresion: zstd\n"
        )
        let result = try await Binary.run(["run", file])
        #expect(result.status == 78)
        #expect(result.stderr.contains("\(file):8:3: unknown key 'compresion' in archive"))
        let missing = try await Binary.run(["run", "no-such-job", "--jobs-dir", dir.path])
        #expect(missing.status == 64)
        let usage = try await Binary.run(["run"])
        #expect(usage.status == 64)
    }

    @Test func missingDatabaseExits69() async throws {
        let shop = ShopJob()
        let result = try await Binary.run(["run", shop.job])
        #expect(result.status == 69)
        #expect(result.stderr.contains(shop.db))
    }

    @Test func corruptCheckpointExits65AndTheHintRepairsIt() async throws {
        let shop = ShopJob()
        try ShopFeed.create(shop.db, count: 120)
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        let checkpoint = shop.jobRoot + "/_feedarchive/checkpoint.json"
        try Data("{\"format\":1,".utf8).write(to: URL(fileURLWithPath: checkpoint))
        let result = try await Binary.run(["run", shop.job])
        #expect(result.status == 65)
        #expect(result.stderr.contains(checkpoint) && result.stderr.contains("corrupt checkpoint"))
        try FileManager.default.moveItem(atPath: checkpoint, toPath: checkpoint + ".bad")
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        #expect(try await shop.archivedSequences() == Array(1...120))
    }

    @Test func tornManifestAppendIsCutOffAndNothingIsLost() async throws {
        let shop = ShopJob()
        try ShopFeed.create(shop.db, count: 120)
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        // A crash in the middle of the next append: half a line, no newline, after the last commit.
        let segment = shop.jobRoot + "/_feedarchive/manifest/00000001.jsonl"
        let lines = try String(contentsOfFile: segment, encoding: .utf8).split(separator: "\n")
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(
            Data(
                lines.last!.prefix(90).replacingOccurrences(
                    of: "\"seq\":\(lines.count)", with: "\"seq\":\(lines.count + 1)"
                ).utf8))
        handle.closeFile()
        try ShopFeed.create(shop.db, count: 30)
        let result = try await Binary.run(["run", shop.job])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("cut off a torn manifest line"))
        #expect(try await shop.archivedSequences() == Array(1...150))
        #expect(try await Binary.run(["verify", shop.job, "--deep"]).status == 0)
    }

    @Test func truncatedCommittedManifestLineIsRefusedAndLeftAlone() async throws {
        let shop = ShopJob()
        try ShopFeed.create(shop.db, count: 120)
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        let segment = shop.jobRoot + "/_feedarchive/manifest/00000001.jsonl"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: segment))
        bytes.removeLast(40)  // damage to a line the checkpoint already names
        try bytes.write(to: URL(fileURLWithPath: segment))
        let result = try await Binary.run(["run", shop.job])
        #expect(result.status == 65)
        #expect(result.stderr.contains("ahead of the manifest") && result.stderr.contains("00000001.jsonl:4"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: segment)) == bytes)  // nothing was changed
        let verify = try await Binary.run(["verify", shop.job])
        #expect(verify.status == 1)
    }

    @Test func swappedDatabaseIsRefusedWith65() async throws {
        let shop = ShopJob()
        try ShopFeed.create(shop.db, count: 50)
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        let other = shop.dir.path + "/other.db"
        try ShopFeed.create(other, count: 80)
        try FileManager.default.removeItem(atPath: shop.db)
        try FileManager.default.moveItem(atPath: other, toPath: shop.db)
        let result = try await Binary.run(["run", shop.job])
        #expect(result.status == 65)
        #expect(
            result.stderr.contains("not the one this archive was made from")
                && result.stderr.contains("feedarchive epoch"))
        #expect(try await shop.archivedSequences() == Array(1...50))  // nothing lost or mixed in
    }

    @Test func tokenFromAnotherJobIsRefusedWith65() async throws {
        let first = ShopJob()
        try ShopFeed.create(first.db, count: 10)
        #expect(try await Binary.run(["run", first.job]).status == 0)
        let token = try #require(
            try await Binary.run(["status", first.job, "--json"]).stdout
                .split(separator: "\n").first { $0.contains("\"checkpoint\"") }?
                .split(separator: "\"").dropFirst(3).first)
        let second = ShopJob()
        try ShopFeed.create(second.db, count: 10)
        let result = try await Binary.run(["epoch", second.job, "--from", String(token), "--reason", "test"])
        #expect(result.status == 65)
        #expect(result.stderr.contains("belongs to another source"))
    }

    @Test func statusMaxAgeAndMetricsFile() async throws {
        let shop = ShopJob()
        try ShopFeed.create(shop.db, count: 75)
        let metrics = shop.dir.path + "/feedarchive.prom"
        #expect(try await Binary.run(["run", shop.job, "--metrics-file", metrics]).status == 0)
        let text = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(text.contains("# TYPE feedarchive_last_success_timestamp_seconds gauge"))
        #expect(text.contains("feedarchive_records{job=\"shop\"} 75"))
        #expect(text.contains("feedarchive_lag_changes{job=\"shop\"} 0"))
        #expect(text.contains("feedarchive_last_exit_code{job=\"shop\"} 0"))
        let fresh = try await Binary.run(["status", shop.job, "--max-age", "1h"])
        #expect(fresh.status == 0)
        #expect(fresh.stdout.contains("75 changes"))
        usleep(1_100_000)
        let stale = try await Binary.run(["status", shop.job, "--max-age", "1s"])
        #expect(stale.status == 1)
        #expect(stale.stdout.contains("STALE"))
    }

    @Test func verifyAgainstSourceFindsRowsChangedAfterArchiving() async throws {
        let shop = ShopJob(maxRecords: 100)
        try ShopFeed.create(shop.db, count: 450)
        #expect(try await Binary.run(["run", shop.job]).status == 0)
        let clean = try await Binary.run(["verify", shop.job, "--against-source"])
        #expect(clean.status == 0, "\(clean.stdout)")
        #expect(clean.stdout.contains("against the source: 5 blobs compared"))
        try sqlite(shop.db, "UPDATE outbox SET payload = '{\"edited\":true}' WHERE seq = 250")
        let edited = try await Binary.run(["verify", shop.job, "--against-source"])
        #expect(edited.status == 1)
        #expect(
            edited.stdout.contains("PROBLEM source: data/")
                && edited.stdout.contains("0_00000000000000000201_00000000000000000300"))
        try sqlite(shop.db, "DELETE FROM outbox WHERE seq <= 300")  // the outbox was pruned
        let pruned = try await Binary.run(["verify", shop.job, "--against-source"])
        #expect(pruned.status == 0, "\(pruned.stdout)")
        #expect(pruned.stdout.contains("2 blobs compared, 3 no longer held by the source"))
        let backfill = try await Binary.run(["backfill", shop.job, "--from", "seq=100", "--until", "seq=200"])
        #expect(backfill.status == 65)
        #expect(backfill.stderr.contains("no longer holds the range"))
    }

    func sqlite(_ db: String, _ sql: String) throws {
        #expect(reap(try spawn("sqlite3", [db, sql])) == 0)
    }

    @Test func jsonLogFormatGivesOneObjectPerLine() async throws {
        let shop = ShopJob()
        try ShopFeed.create(shop.db, count: 30)
        let result = try await Binary.run(["run", shop.job, "--log-format", "json"])
        #expect(result.status == 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        let object = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        #expect(object?["records"] as? Int == 30)
        #expect(object?["event"] as? String == "run")
    }
}

/// A real full disk: the archive lives on a small tmpfs that fills up mid-run. The run stops
/// with 74 naming the file, the checkpoint is not ahead of what is durable, and once there is
/// room again the next run completes and verify is clean. Needs permission to mount (root).
@Suite(.serialized) struct RealDiskFullTests {
    static var canMount: Bool {
        let probe = TempDirectory("mount-probe")
        defer { _ = reap((try? spawn("umount", [probe.path])) ?? 0) }
        return (try? reap(spawn("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe.path]))) == 0
    }

    @Test(.enabled(if: canMount, "mounting a tmpfs needs root"))
    func diskFullStopsWith74AndTheNextRunCompletes() async throws {
        let shop = ShopJob(compression: "none", maxRecords: 2000, pageSize: 500)
        try ShopFeed.create(shop.db, count: 20_000)  // about 10 MB of envelopes
        let lake = shop.dir.path + "/lake"
        try FileManager.default.createDirectory(atPath: lake, withIntermediateDirectories: true)
        #expect(reap(try spawn("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", lake])) == 0)
        defer { _ = reap((try? spawn("umount", [lake])) ?? 0) }

        let full = try await Binary.run(["run", shop.job])
        #expect(full.status == 74, "\(full.stderr)")
        #expect(full.stderr.contains("No space left on device") && full.stderr.contains(lake))
        let report = try await Binary.run(["verify", shop.job, "--json"])
        #expect(!report.stdout.contains("\"kind\" : \"checkpoint\""))
        #expect(!report.stdout.contains("\"kind\" : \"hash\"") && !report.stdout.contains("\"kind\" : \"missing\""))

        #expect(reap(try spawn("mount", ["-o", "remount,size=64m", lake])) == 0)
        let again = try await Binary.run(["run", shop.job])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try await shop.archivedSequences() == Array(1...20_000))
        #expect(try await Binary.run(["verify", shop.job, "--deep"]).status == 0)
    }
}
