import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

@Suite struct CommitProtocolTests {
    @Test func inMemorySourcePassesTheConformanceSuite() async throws {
        let checks = try await FeedSourceConformance.run(InMemoryConformanceFeed())
        #expect(checks.count >= 15)
    }

    @Test func archivesEveryChangeOnceAndInOrder() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let source = InMemorySource()
        for index in 0..<40 { source.append(count: index % 5 == 0 ? 3 : 1) }
        let first = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(first.records == 56)
        #expect(first.blobs >= 5)
        let expected = source.changes().map { InMemorySource.position(group: $0.group, index: $0.index).rawValue }
        #expect(try archivedLines(job).map(position(of:)) == expected)

        let idle = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(idle.blobs == 0 && idle.records == 0 && idle.lag == 0)

        source.append(count: 2)
        let more = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(more.records == 2)
        #expect(try archivedLines(job).count == 58)
        #expect(source.lastAcknowledged?.cursors["0"] == "41")
        let report = try Verifier(job: job).verify(deep: true)
        #expect(report.isClean, "\(report.problems)")
        #expect(report.records == 58)
    }

    /// Sources reach the run's liveness through `Liveness.current` (to beat it in long loops
    /// that return no page), and the run beats it as pages come.
    @Test func sourcesSeeTheRunsLiveness() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let source = InMemorySource()
        for _ in 0..<30 { source.append() }
        let options = RunOptions()
        let seen = Mutex<[Bool]>([])
        source.onRead = { seen.withLock { $0.append(Liveness.current === options.liveness) } }
        #expect(Liveness.current == nil)
        try await Task.sleep(nanoseconds: 300_000_000)
        _ = try await ArchiveRunner(job: job, source: source).run(options)
        let reads = seen.withLock { $0 }
        #expect(!reads.isEmpty && reads.allSatisfy { $0 })
        #expect(options.liveness.idleSeconds < 0.3)
    }

    @Test func batchesNeverSplitAGroupAndRespectMaxRecords() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 10)
        let source = InMemorySource()
        for _ in 0..<12 { source.append(count: 1) }
        source.append(count: 25)  // one transaction larger than a batch: one blob
        for _ in 0..<12 { source.append(count: 2) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let blobs = archive.manifest.entries.filter { $0.kind == .blob }
        // The 25-change group joins the open batch of 2 and is not cut: one blob of 27.
        #expect(blobs.map(\.records!) == [10, 27, 10, 10, 4])
        for (left, right) in zip(blobs, blobs.dropFirst()) {
            #expect(
                left.lastPos!.prefix(20) != right.firstPos!.prefix(20),
                "a group is split between \(left.path!) and \(right.path!)")
        }
    }

    @Test func hourBucketsCutBatchesButLateChangesStay() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 1000)
        let source = InMemorySource()
        source.append(timestamp: baseTime)
        source.append(timestamp: baseTime + 60_000_000)
        source.append(timestamp: baseTime + hour)  // next hour: a new blob
        source.append(timestamp: baseTime)  // late: stays in the hour-12 blob
        source.append(timestamp: baseTime + hour + 1)
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let blobs = archive.manifest.entries.filter { $0.kind == .blob }
        #expect(blobs.map(\.records) == [2, 3])
        #expect(blobs[0].path!.hasPrefix("data/date=2026-11-18/hour=11/"))
        #expect(blobs[1].path!.hasPrefix("data/date=2026-11-18/hour=12/"))
        #expect(blobs[1].minTs == "2026-11-18T11:06:40Z")  // the late change shows in min_ts
        #expect(blobs[1].maxTs == "2026-11-18T12:06:40.000001Z")
    }

    @Test func timeZoneFolders() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, extra: "  time_zone: Asia/Tokyo\n")
        let source = InMemorySource()
        source.append(timestamp: baseTime)
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let archive = JobArchive(job: job)
        _ = try archive.load()
        #expect(archive.manifest.entries.last!.path!.hasPrefix("data/date=2026-11-18/hour=20/"))
        #expect(archive.identity?.timeZone == "Asia/Tokyo")
    }

    @Test func partitionPathFromDataStaysInsideTheJobRoot() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, partitionPath: "region={value}")
        let source = InMemorySource()
        for value in ["eu", "../../../etc", "/", "a\u{0}b", ".."] { source.append(pathValue: value) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let paths = archive.manifest.entries.compactMap(\.path)
        #expect(paths.count == 5)
        for path in paths {
            #expect(path.hasPrefix("data/region="))
            #expect(!path.split(separator: "/").contains(".."))
            #expect(!path.contains("\u{0}"))
        }
        // Nothing was created beside the lake.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["lake"])
        let mode =
            try FileManager.default.attributesOfItem(atPath: archive.layout.absolute(paths[0]))[.posixPermissions]
            as? Int
        #expect(mode == 0o640)
        let dirMode =
            try FileManager.default.attributesOfItem(atPath: archive.layout.dataDirectory)[.posixPermissions] as? Int
        #expect(dirMode == 0o750)
    }

    @Test func signalDropsTheBlobInProgressAndKeepsCommittedOnes() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 5)
        let source = InMemorySource()
        for _ in 0..<1_000 { source.append() }
        let archive = try await runInterruptedOnCommit(job, source) { $0.blobs == 2 }
        // The batches already handed to the commit thread (at most 64) are whole: they commit too.
        let committed = archive.manifest.entries.filter { $0.kind == .blob }.count
        #expect(committed >= 2 && committed < 200, "\(committed) blobs")
        #expect(try Verifier(job: job).verify(deep: true).isClean)
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try archivedLines(job).count == 1_000)
    }

    @Test func transientReadFailuresAreRetriedWithBackoff() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 4)
        let source = InMemorySource()
        for _ in 0..<10 { source.append() }
        source.failNextReads(2)
        var options = RunOptions()
        options.retry = RetryPolicy(attempts: 4, initialDelay: 0.01, maxDelay: 0.05)
        let summary = try await ArchiveRunner(job: job, source: source).run(options)
        #expect(summary.records == 10)
        #expect(summary.warnings.filter { $0.contains("retrying") }.count == 2)
    }

    @Test func persistentSourceFailureCommitsNothingPastIt() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 4)
        let source = InMemorySource()
        for _ in 0..<10 { source.append() }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions(maxRecords: 4))
        for _ in 0..<10 { source.append() }
        source.failNextReads(3)
        var options = RunOptions()
        options.retry = RetryPolicy(attempts: 3, initialDelay: 0.01, maxDelay: 0.05)
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(options)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 69
        }
        #expect(try archivedLines(job).count == 4)  // the checkpoint did not pass the failure
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try archivedLines(job).count == 20)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func anotherSourceOrASequenceGoingBackwardsIsRefused() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let source = InMemorySource()
        for _ in 0..<5 { source.append() }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())

        source.truncate(keeping: 2)
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".contains("went backwards")
        }

        let other = InMemorySource(name: "another-feed")
        for _ in 0..<9 { other.append() }
        await #expect {
            try await ArchiveRunner(job: job, source: other).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65
                && "\(error)".contains("not the one this archive was made from")
                && "\(error)".contains("feedarchive epoch")
        }
        #expect(try archivedLines(job).count == 5)
    }

    @Test func lockIsExclusive() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let source = InMemorySource()
        let archive = JobArchive(job: job)
        let lock = try archive.openForWriting()
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 75 && "\(error)".contains("pid \(getpid())")
        }
        lock.release()
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
    }
}
