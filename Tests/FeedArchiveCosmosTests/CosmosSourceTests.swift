import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@testable import FeedArchiveCosmos

/// The test server as a conformance feed: changes are appended to partition key range 0.
final class CosmosConformanceFeed: ConformanceFeed {
    let server: CosmosTestServer
    let dir = TempDirectory()
    init(server: CosmosTestServer) { self.server = server }

    func makeSource() async throws -> any FeedSource {
        try CosmosSource.make(job: try cosmosJob(server, in: dir))
    }

    func append(_ count: Int) async throws {
        // Transactions of two share one _lsn, so groups are exercised too.
        try server.control([
            "action": "generate", "count": count, "range": "0", "transaction": 2, "seed": Int.random(in: 0..<1_000_000),
        ])
    }
}

func cosmosJob(
    _ server: CosmosTestServer, in dir: TempDirectory, mode: String = "latest_version", maxItemCount: Int = 100,
    maxRecords: Int = 200,
    start: String = "beginning", sourceExtra: String = ""
) throws -> JobConfig {
    let yaml = """
        name: cosmos
        \(server.sourceYAML(mode: mode, maxItemCount: maxItemCount, extra: sourceExtra))
        archive:
          root: \(dir.path)/lake
        batch:
          max_records: \(maxRecords)
          page_size: 1000
        start: \(start)

        """
    return try JobConfig.parse(yaml: yaml, file: dir.path + "/cosmos.yaml")
}

/// (id, _lsn) of each archived change, and what the server's history says the latest-version
/// feed holds: each live document at the LSN of its current version.
func archivedVersions(_ job: JobConfig) throws -> [String] {
    try archivedLines(job).map { line in
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        let key = object["key"] as! [String: Any]
        let source = object["source"] as! [String: Any]
        return "\(key["id"]!)@\(source["_lsn"]!)"
    }
}

func latestVersions(_ server: CosmosTestServer) throws -> [String] {
    var current: [String: Int] = [:]
    for change in try server.history() {
        let id = change["id"] as! String
        if change["op"] as! String == "delete" { current[id] = nil } else { current[id] = change["lsn"] as? Int }
    }
    return current.map { "\($0.key)@\($0.value)" }
}

@Suite(.serialized) struct CosmosSourceTests {
    @Test func passesTheConformanceSuite() async throws {
        let server = try CosmosTestServer(ranges: 3)
        let passed = try await FeedSourceConformance.run(CosmosConformanceFeed(server: server))
        #expect(passed.contains("resume-exact"))
        #expect(passed.contains("head-is-stop-target"))
    }

    @Test func archivesEveryRangeAndFollowsASplitInTheMiddleOfTheFeed() async throws {
        let server = try CosmosTestServer(ranges: 4)
        let dir = TempDirectory()
        let job = try cosmosJob(server, in: dir, maxItemCount: 50, maxRecords: 120)
        try server.control(["action": "generate", "count": 600, "transaction": 3, "updates": 0.2, "seed": 1])
        var summary = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        #expect(summary.records > 0)
        try server.control(["action": "generate", "count": 300, "updates": 0.3, "deletes": 0.1, "seed": 2])
        let children = try #require(try server.control(["action": "split", "range": "1"])["children"] as? [String])
        try server.control(["action": "generate", "count": 300, "transaction": 2, "seed": 3])
        summary = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        #expect(summary.warnings.contains { $0.contains("split into") }, "\(summary.warnings)")

        // Each document's current version is archived; nothing twice at one position.
        let archived = try archivedVersions(job)
        #expect(try Set(latestVersions(server)).isSubset(of: Set(archived)))
        let positions = try archivedLines(job).map { line -> String in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return "\(object["part"]!)/\(object["pos"]!)"
        }
        #expect(Set(positions).count == positions.count)
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let splits = archive.manifest.entries.filter { $0.kind == .split }
        #expect(splits.count == 1)
        #expect(splits.first?.part == "1")
        let checkpoint = try ContinuationToken.decode(archive.checkpoint!.token)
        #expect(Set(checkpoint.cursors.keys) == Set(["0", "2", "3"] + children))
        #expect(checkpoint.extra["mode"] == "latest_version")
        let report = try Verifier(job: job).verify(deep: true)
        #expect(report.isClean, "\(report.problems.map(\.message))")
    }

    @Test func aMergedRangeIsReadThroughTheNewRangeByEPK() async throws {
        let server = try CosmosTestServer(ranges: 4)
        let dir = TempDirectory()
        let job = try cosmosJob(server, in: dir, mode: "all_versions_and_deletes", start: "now")
        _ = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        try server.control(["action": "generate", "count": 200, "updates": 0.3, "deletes": 0.1, "seed": 4])
        _ = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        try server.control(["action": "generate", "count": 200, "updates": 0.3, "deletes": 0.1, "seed": 5])
        let merged = try #require(try server.control(["action": "merge", "ranges": ["1", "2"]])["merged"] as? String)
        try server.control(["action": "generate", "count": 200, "updates": 0.3, "deletes": 0.1, "seed": 6])
        let summary = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        #expect(
            summary.warnings.filter { $0.contains("merged into range \(merged)") }.count == 2, "\(summary.warnings)")

        // All versions mode: the archive is the server's history, change for change.
        let expected = try server.history().map { "\($0["id"]!)@\($0["lsn"]!):\($0["op"]!)" }.sorted()
        let archived = try archivedLines(job).map { line -> String in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let key = object["key"] as! [String: Any]
            let source = object["source"] as! [String: Any]
            return "\(key["id"]!)@\(source["_lsn"]!):\(source["operationType"]!)"
        }.sorted()
        #expect(archived.count == 600)
        #expect(archived == expected)
        let archive = JobArchive(job: job)
        _ = try archive.load()
        #expect(archive.manifest.entries.filter { $0.kind == .merge }.count == 2)
        let checkpoint = try ContinuationToken.decode(archive.checkpoint!.token)
        #expect(Set(checkpoint.cursors.keys) == ["0", "1", "2", "3"])
        #expect(checkpoint.cursors["1"]?.contains(",\(merged),") == true)
        let report = try Verifier(job: job).verify(deep: true)
        #expect(report.isClean, "\(report.problems.map(\.message))")
    }

    @Test func throttlingWaitsRetryAfterAndUnavailabilityBacksOff() async throws {
        let server = try CosmosTestServer(ranges: 2)
        let dir = TempDirectory()
        let job = try cosmosJob(server, in: dir, maxItemCount: 20)
        try server.control(["action": "generate", "count": 300, "seed": 7])
        try server.control(["action": "storm", "status": 429, "count": 12, "retry_after_ms": 30])
        try server.control(["action": "storm", "status": 503, "count": 3])
        try server.control(["action": "split", "range": "0", "completing": 2])
        var options = RunOptions()
        options.retry = RetryPolicy(attempts: 6, initialDelay: 0.02, maxDelay: 0.1)
        let started = Date()
        let summary = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(options)
        #expect(Date().timeIntervalSince(started) >= 12 * 0.03)
        #expect(summary.records == 300)
        #expect(summary.warnings.contains { $0.contains("retrying") })
        let statuses = ((try server.control(["action": "stats"])["feed_requests"] as? [[Any]]) ?? []).compactMap {
            $0[1] as? Int
        }
        #expect(statuses.filter { $0 == 429 }.count == 12)
        #expect(statuses.filter { $0 == 503 }.count == 3)
        #expect(statuses.filter { $0 == 410 }.count >= 3)  // two while completing, then gone
        #expect(Set(try archivedVersions(job)) == Set(try latestVersions(server)))
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func aFailingRangeDoesNotHoldBackTheOthers() async throws {
        let server = try CosmosTestServer(ranges: 3)
        let dir = TempDirectory()
        let job = try cosmosJob(server, in: dir)
        try server.control(["action": "generate", "count": 90, "seed": 8])
        try server.control(["action": "storm", "status": 503, "count": 1000, "range": "0"])
        var options = RunOptions()
        options.retry = RetryPolicy(attempts: 3, initialDelay: 0.01, maxDelay: 0.02)
        await #expect {
            try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(options)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 69
        }
        let parts = Set(
            try archivedLines(job).map { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["part"] as? String ?? "?"
            })
        #expect(parts == ["1", "2"])
        try server.control(["action": "calm"])
        _ = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        #expect(Set(try archivedVersions(job)) == Set(try latestVersions(server)))
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    /// A read ahead that outlives its run (a 429 wait, a range reload) must not start a request
    /// on a closed source: it fails with an error instead.
    @Test func aRequestAfterCloseFailsInsteadOfCrashing() async throws {
        let server = try CosmosTestServer(ranges: 1)
        let dir = TempDirectory()
        let job = try cosmosJob(server, in: dir)
        try server.control(["action": "generate", "count": 10, "seed": 3])
        let source = try CosmosSource.make(job: job)
        let token = try await source.resolve(.beginning)
        let (partition, cursor) = try #require(token.cursors.first)
        #expect(
            try await source.readPage(partition: partition, after: cursor, through: "", maxRecords: 100).records.count
                == 10)
        await source.close()
        await #expect(throws: FeedArchiveError.self) {
            try await source.readPage(partition: partition, after: cursor, through: "", maxRecords: 100)
        }
    }

    /// A range that answers slowly gets its share of a run's time budget, not all of it: the
    /// other ranges are read up to their head in the same run.
    @Test func aSlowRangeDoesNotUseTheWholeTimeBudget() async throws {
        let server = try CosmosTestServer(ranges: 3)
        let dir = TempDirectory()
        let job = try cosmosJob(server, in: dir, maxItemCount: 20)
        try server.control(["action": "generate", "count": 600, "seed": 9])
        try server.control(["action": "slow", "range": "0", "seconds": 0.25])
        let parts = { (lines: ArraySlice<String>) in
            lines.map { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["part"] as? String ?? "?"
            }
        }
        let first = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(
            RunOptions(maxDuration: 2))
        #expect(first.stoppedBy == "max-duration")
        let afterFirst = try archivedLines(job)
        #expect(Set(parts(afterFirst[...])) == ["0", "1", "2"])
        // Range 0 had about 200 changes and read 20 per quarter second: it was not done.
        try server.control(["action": "slow", "range": "0", "seconds": 0])
        let second = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        #expect(second.records > 0)
        let all = try archivedLines(job)
        // Ranges 1 and 2 were caught up by the first run: the second one read only range 0.
        #expect(Set(parts(all[afterFirst.count...])) == ["0"])
        #expect(Set(try archivedVersions(job)) == Set(try latestVersions(server)))
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    /// In all-versions mode a past range can be read again exactly as archived: pages stop on the
    /// blob's end cursor even when the re-read uses other page sizes.
    @Test func verifyAgainstTheSourceRereadsEachBlobExactly() async throws {
        let server = try CosmosTestServer(ranges: 2)
        let dir = TempDirectory()
        let job = try cosmosJob(
            server, in: dir, mode: "all_versions_and_deletes", maxItemCount: 30, maxRecords: 70, start: "now")
        _ = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        try server.control([
            "action": "generate", "count": 400, "transaction": 3, "updates": 0.3, "deletes": 0.1, "seed": 31,
        ])
        _ = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        var report = try Verifier(job: job).verify(deep: true)
        try await Verifier(job: job).compareWithSource(try CosmosSource.make(job: job), report: &report)
        #expect(report.isClean, "\(report.problems.map(\.message))")
        let note = report.notes.first { $0.contains("against the source") } ?? ""
        #expect(note.contains("\(report.blobs) blobs compared"), "\(note)")
        #expect(report.blobs > 5)

        // The latest-version feed cannot re-read a range as it was: it says so instead of comparing.
        let latest = try CosmosSource.make(job: try cosmosJob(server, in: dir))
        await #expect { try await latest.checkRetained(from: try await latest.resolve(.beginning)) } throws: {
            ($0 as? FeedArchiveError)?.description.contains("only the current version") == true
        }
    }

    @Test func allVersionsOutsideRetentionIsRefusedWith65AndExplained() async throws {
        let server = try CosmosTestServer(ranges: 2)
        let dir = TempDirectory()
        let job = try cosmosJob(server, in: dir, mode: "all_versions_and_deletes", start: "now")
        _ = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
        let lsn = try #require(try server.control(["action": "generate", "count": 50, "seed": 9])["lsn"] as? Int)
        try server.control(["action": "retention", "lsn": lsn])
        do {
            _ = try await ArchiveRunner(job: job, source: try CosmosSource.make(job: job)).run(RunOptions())
            Issue.record("a run outside the retention window succeeded")
        } catch let error as FeedArchiveError {
            #expect(error.exitCode == 65)
            #expect(error.description.contains("outside the retention window"))
            #expect(error.description.contains("feedarchive epoch"))
        }
    }

    @Test func aTokenOfTheOtherModeOrAnotherContainerIsRefused() async throws {
        let server = try CosmosTestServer(ranges: 2)
        let dir = TempDirectory()
        let latest = try CosmosSource.make(job: try cosmosJob(server, in: dir))
        let all = try CosmosSource.make(
            job: try cosmosJob(server, in: dir, mode: "all_versions_and_deletes", start: "now"))
        let token = try await latest.resolve(.beginning)
        #expect(token.extra["mode"] == "latest_version")
        for attempt in [
            { _ = try await all.resolve(.token(token.encoded)) }, { try await all.checkContinuity(from: token) },
        ] {
            do {
                try await attempt()
                Issue.record("a latest_version token was accepted in all_versions_and_deletes mode")
            } catch let error as FeedArchiveError {
                #expect(error.exitCode == 65)
                #expect(error.description.contains("made for the latest_version change feed"))
            }
        }
        await #expect(throws: FeedArchiveError.self) { _ = try await all.resolve(.beginning) }
        var foreign = token
        foreign.source = "0123456789abcdef"
        await #expect { _ = try await latest.resolve(.token(foreign.encoded)) } throws: {
            ($0 as? FeedArchiveError)?.exitCode == 65
        }
    }

    @Test func aWrongKeyOrMissingContainerExits78() async throws {
        let server = try CosmosTestServer(ranges: 1)
        let dir = TempDirectory()
        for (replace, with, expected) in [
            (CosmosTestServer.key, "c2VjcmV0IGtleSB3aXRoIGEgdHlwbw==", "the account refused the key"),
            ("container: orders", "container: nosuch", "container nosuch of database feeddb does not exist"),
        ] {
            let text = try cosmosJobText(server, in: dir).replacingOccurrences(of: replace, with: with)
            let job = try JobConfig.parse(yaml: text, file: dir.path + "/cosmos.yaml")
            do {
                _ = try await CosmosSource.make(job: job).identity()
                Issue.record("no error for \(with)")
            } catch let error as FeedArchiveError {
                #expect(error.exitCode == 78)
                #expect(error.description.contains(expected), "\(error)")
                #expect(!error.description.contains(with.hasPrefix("c2Vj") ? with : "never"))
            }
        }
    }
}

extension CosmosSourceTests {
    /// A wrong key on the read path: refused at once, naming the key's setting, never retried.
    @Test func aWrongKeyIsRefusedNamingTheSettingAndNeverRetried() async throws {
        let server = try CosmosTestServer(ranges: 1)
        let dir = TempDirectory()
        try server.control(["action": "generate", "count": 10, "seed": 3])
        let right = try CosmosSource.make(job: try cosmosJob(server, in: dir))
        let token = try await right.resolve(.beginning)
        await right.close()
        let (partition, cursor) = try #require(token.cursors.first)
        let wrongKey = "c2VjcmV0IGtleSB3aXRoIGEgdHlwbw=="
        let text = try cosmosJobText(server, in: dir).replacingOccurrences(of: CosmosTestServer.key, with: wrongKey)
        let wrong = try CosmosSource.make(job: try JobConfig.parse(yaml: text, file: dir.path + "/cosmos.yaml"))
        var attempts = 0
        do {
            _ = try await RetryPolicy(attempts: 6, initialDelay: 0.01, maxDelay: 0.02).run(
                deadline: nil, stop: StopSignal()
            ) {
                attempts += 1
                return try await wrong.readPage(partition: partition, after: cursor, through: "", maxRecords: 10)
            }
            Issue.record("a read with a wrong key succeeded")
        } catch let error as FeedArchiveError {
            guard case .sourceRefused(let setting, let message, let hint) = error else {
                Issue.record("not a refusal: \(error)")
                return
            }
            #expect(setting == "source.key")
            #expect(message.contains("401"), "\(message)")
            #expect(hint?.contains("key") == true, "\(hint ?? "")")
            #expect(error.exitCode == 78 && !error.isRetryable)
            #expect(!error.description.contains(wrongKey))
        }
        #expect(attempts == 1)
        await wrong.close()
    }

    /// A 403 (the account's firewall, or keys disabled on the account): refused, with what
    /// gives access.
    @Test func aForbiddenRequestIsRefusedWithWhatGivesAccess() async throws {
        let server = try CosmosTestServer(ranges: 1)
        let dir = TempDirectory()
        let source = try CosmosSource.make(job: try cosmosJob(server, in: dir))
        let body =
            #"{"code":"Forbidden","message":"Request originated from IP 192.0.2.1 through public internet. This is blocked by your Cosmos DB account firewall settings."}"#
        let forbidden = CosmosResponse(status: 403, headers: [:], body: Data(body.utf8))
        #expect {
            try source.check(forbidden, what: "the database account")
        } throws: { error in
            guard let error = error as? FeedArchiveError,
                case .sourceRefused(let setting, let message, let hint) = error
            else { return false }
            return setting == "source.key" && message.contains("403") && message.contains("firewall")
                && (hint ?? "").contains("firewall")
                && !error.isRetryable
        }
        await source.close()
    }
}

func cosmosJobText(_ server: CosmosTestServer, in dir: TempDirectory) throws -> String {
    "name: cosmos\n" + server.sourceYAML() + "\narchive:\n  root: \(dir.path)/lake\n"
}
