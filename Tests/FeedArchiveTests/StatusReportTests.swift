import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@Suite struct StatusReportTests {
    func object(_ report: StatusReport) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any])
    }

    @Test func reportsTheArchiveAndWhatTheSourceHasNotArchived() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir, changes: 20, maxRecords: 5)
        for _ in 0..<3 { source.append() }

        let report = try await StatusReport(job: job, source: .source(source))

        let totals = ArchiveTotals(archive.manifest)
        #expect(report.job == "mem" && report.jobFile == job.file && report.archiveRoot == archive.layout.jobRoot)
        #expect(
            report.totals.blobs == totals.blobs && report.totals.records == 20 && report.totals.bytes == totals.bytes)
        #expect(report.manifestSeq == archive.manifest.tailSeq)
        #expect(report.checkpoint == archive.checkpoint)
        #expect(report.cursors == ["0": "20"])
        #expect(report.lag == 3 && report.lagError == nil)
        #expect(report.lastRun == nil && report.damage == nil && !report.isStale)

        let json = try object(report)
        #expect(json["job"] as? String == "mem")
        #expect(json["records"] as? Int == 20)
        #expect(json["lag"] as? Int == 3)
        #expect(json["checkpoint"] as? String == archive.checkpoint?.token)
        #expect(json["cursors"] as? [String: String] == ["0": "20"])
        #expect(json["manifest_seq"] as? Int == Int(archive.manifest.tailSeq))
        for absent in ["stale", "last_run_at", "last_exit_code", "source"] { #expect(json[absent] == nil, "\(absent)") }
    }

    /// status works when the source is down: the failure is reported, not thrown.
    @Test func aSourceThatCannotAnswerIsReportedNotThrown() async throws {
        let dir = TempDirectory()
        let (job, _, _) = try await archivedMemoryFeed(in: dir, changes: 5)
        let report = try await StatusReport(job: job, source: .registry(SourceRegistry([])))
        #expect(report.lag == nil)
        #expect(report.lagError?.contains("unknown source kind 'memory'") == true)
        #expect(report.totals.records == 5)
        #expect(try object(report)["lag"] == nil)
    }

    @Test func aJobThatHasNotRunAsksNoSource() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let report = try await StatusReport(job: job, source: .registry(SourceRegistry([])))
        #expect(report.checkpoint == nil && report.cursors == nil)
        #expect(report.lag == nil && report.lagError == nil)
        #expect(report.totals.blobs == 0 && report.manifestSeq == 0)
    }

    @Test func freshnessComesFromTheLastSuccessfulRun() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir, changes: 5)
        let succeeded = try RunRecord.record(archive.layout, exitCode: 0, summary: nil, message: nil, mode: 0o640)
        _ = try RunRecord.record(archive.layout, exitCode: 69, summary: nil, message: "down", mode: 0o640)
        let lastSuccess = try #require(succeeded.lastSuccessAt)

        var report = try await StatusReport(job: job, source: .source(source))
        #expect(report.lastRun?.lastExitCode == 69 && report.lastRun?.lastSuccessAt == lastSuccess)
        report.checkFreshness(maxAge: 60, now: Date(timeIntervalSince1970: lastSuccess + 30))
        #expect(!report.isStale && report.maxAge == 60)
        #expect(try object(report)["stale"] as? Bool == false)
        report.checkFreshness(maxAge: 60, now: Date(timeIntervalSince1970: lastSuccess + 90))
        #expect(report.isStale)
        let json = try object(report)
        #expect(json["stale"] as? Bool == true)
        #expect(json["last_exit_code"] as? Int == 69)
        let printed = try #require(json["last_success_at"] as? Double)
        #expect(abs(printed - lastSuccess) < 0.001)
    }

    @Test func aJobThatNeverSucceededIsStale() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir, changes: 2)
        _ = try RunRecord.record(archive.layout, exitCode: 75, summary: nil, message: "locked", mode: 0o640)
        var report = try await StatusReport(job: job, source: .source(source))
        report.checkFreshness(maxAge: 10 * 365 * 86_400)
        #expect(report.isStale)
    }

    @Test func aTornManifestTailIsReported() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir, changes: 5)
        let segment = archive.layout.manifestDirectory + "/" + (try #require(try archive.store.segments().last))
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data(#"{"seq":99,"#.utf8))
        try handle.close()
        let report = try await StatusReport(job: job, source: .source(source))
        let damage = try #require(report.damage)
        #expect(damage.isTornTail && damage.file == segment)
        #expect(report.totals.records == 5)
    }
}
