import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

/// A run and `status` read the manifest from the checkpoint's line on, and the checkpoint
/// carries the archive's totals, so their cost does not grow with the archive.
@Suite struct TailReadTests {
    func wholeTotals(_ job: JobConfig) throws -> ArchiveTotals {
        let archive = JobArchive(job: job)
        _ = try archive.load()
        return ArchiveTotals(archive.manifest)
    }

    func checkpoint(_ job: JobConfig) throws -> Checkpoint {
        try #require(try Checkpoint.load(from: JobArchive(job: job).layout.checkpointFile, fs: PosixFileSystem()))
    }

    @Test func theCheckpointCarriesTheTotalsOfTheWholeManifest() async throws {
        let dir = TempDirectory()
        let (job, source, _) = try await archivedMemoryFeed(in: dir)
        for round in 0..<3 {
            for _ in 0...round { source.append() }
            _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
            let totals = try wholeTotals(job)
            #expect(try checkpoint(job).totals == totals)
            #expect(totals.records == Int64(source.changes().count))
        }
        // status reads the tail and the totals, and agrees with the whole manifest.
        let archive = JobArchive(job: job)
        _ = try archive.loadTail()
        #expect(!archive.manifest.isComplete)
        #expect(archive.manifest.entries.count == 1)
        #expect(try archive.totalsAtTail() == wholeTotals(job))
    }

    @Test func aCheckpointWithoutTotalsGetsThemFromTheWholeManifestOnce() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir)
        var old = try checkpoint(job)
        old.totals = nil
        try old.write(to: archive.layout.checkpointFile, fs: PosixFileSystem(), mode: 0o640)
        let status = JobArchive(job: job)
        _ = try status.loadTail()
        #expect(status.manifest.isComplete)
        #expect(try status.totalsAtTail() == wholeTotals(job))
        source.append()
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try checkpoint(job).totals == wholeTotals(job))
    }

    @Test func rollingForwardCountsTheLinesAfterTheCheckpoint() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir)
        let before = try checkpoint(job)
        source.append()
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        // A run killed after its manifest line, before its checkpoint.
        try before.write(to: archive.layout.checkpointFile, fs: PosixFileSystem(), mode: 0o640)
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.contains { $0.contains("rolled the checkpoint forward") })
        #expect(try checkpoint(job).totals == wholeTotals(job))
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func aRunWritesTheCheckpointOnceASecondAndAtItsEnd() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 1)
        let source = InMemorySource()
        for _ in 0..<40 { source.append() }
        let writes = Mutex(0)
        let fs = FaultInjectingFileSystem { operation, path in
            if operation == .create, path.hasSuffix("checkpoint.json.tmp") { writes.withLock { $0 += 1 } }
        }
        let started = Date()
        let summary = try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        let seconds = Date().timeIntervalSince(started)
        #expect(summary.blobs == 40)
        // One for the epoch, one after the first blob, at most one a second, one at the end.
        #expect(writes.withLock { $0 } <= Int(seconds) + 3, "\(seconds) s")
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let saved = try checkpoint(job)
        #expect(saved.manifestSeq == archive.manifest.tailSeq)
        #expect(saved.token == archive.manifest.liveToken)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }
}
