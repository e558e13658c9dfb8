import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// `compact` merges the blobs of closed hour buckets: the same records in the same order,
/// verify clean (full and incremental), the totals right, a stopped compaction finished by the
/// next, a damaged blob refused with nothing changed.
@Suite struct CompactionTests {
    /// Four hours of changes from 11:00, five minutes apart, archived by runs of 4 changes: 12
    /// changes and 3 blobs an hour, as a five-minute cron job makes.
    static func cronArchive(_ dir: TempDirectory, hours: Int = 4) async throws -> (JobConfig, InMemorySource) {
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource()
        let start = baseTime - 400_000_000  // 11:00:00
        for index in 0..<(hours * 12) { source.append(timestamp: start + Int64(index) * 300_000_000) }
        var options = RunOptions()
        options.maxRecords = 4
        for _ in 0..<(hours * 3) { _ = try await ArchiveRunner(job: job, source: source).run(options) }
        return (job, source)
    }

    static func blobFiles(_ job: JobConfig) -> [String] {
        let data = job.archive.root + "/" + job.name + "/data"
        return ((FileManager.default.enumerator(atPath: data)?.allObjects as? [String]) ?? []).filter {
            $0.hasSuffix(".zst")
        }.sorted()
    }

    @Test func closedBucketsBecomeOneBlobWithTheSameRecords() async throws {
        let dir = TempDirectory()
        let (job, source) = try await Self.cronArchive(dir)
        let before = try archivedLines(job)
        let files = Self.blobFiles(job)
        #expect(try Verifier(job: job).verify(deep: true, full: false).isClean)  // a mark before compaction

        let dry = try Compactor(job: job).compact(after: 0, dryRun: true)
        #expect(!dry.blobs.isEmpty)
        #expect(Self.blobFiles(job) == files, "a dry run changed files")

        let report = try Compactor(job: job).compact(after: 0)
        // Hours whose end the archive has passed: the first three (the fourth is still open).
        #expect(report.blobs.count == 3, "\(report.blobs.map(\.folder))")
        #expect(report.blobs.allSatisfy { $0.replaces.count == 3 && $0.records == 12 })
        #expect(Self.blobFiles(job).count == files.count - 3 * 2)
        #expect(try archivedLines(job) == before)
        #expect(
            before.map(position(of:))
                == source.changes().map {
                    InMemorySource.position(group: $0.group, index: $0.index).rawValue
                })

        for full in [false, true] {
            let check = try Verifier(job: job).verify(deep: true, full: full)
            #expect(check.isClean, "full \(full): \(check.problems.map(\.message))")
            #expect(check.blobs == files.count - 6 && check.records == 48, "full \(full): \(check.blobs) blobs")
            #expect(check.duplicateRanges == 0)
        }
        let archive = JobArchive(job: job)
        _ = try archive.loadTail()
        let totals = try archive.totalsAtTail()
        #expect(totals.blobs == files.count - 6 && totals.records == 48)
        #expect(totals == ArchiveTotals(try archive.store.read().0))

        // Nothing more to do; the job goes on as before.
        #expect(try Compactor(job: job).compact(after: 0).blobs.isEmpty)
        for _ in 0..<5 { source.append(timestamp: baseTime + 5 * hour) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
        #expect(try archivedLines(job).count == 53)
    }

    /// A compaction after every run (as `compact:` in the job does) reads the manifest from its
    /// mark, the first line of a bucket still open, and ends where one late compaction ends.
    @Test func aCompactionAfterEveryRunEndsWhereOneCompactionEnds() async throws {
        let dirA = TempDirectory()
        let (jobA, _) = try await Self.cronArchive(dirA)
        _ = try Compactor(job: jobA).compact(after: 0)

        let dirB = TempDirectory()
        let job = try memoryJob(in: dirB, maxRecords: 100)
        let source = InMemorySource()
        let start = baseTime - 400_000_000
        for index in 0..<48 { source.append(timestamp: start + Int64(index) * 300_000_000) }
        var options = RunOptions()
        options.maxRecords = 4
        var marks: [Int64] = []
        for _ in 0..<12 {
            _ = try await ArchiveRunner(job: job, source: source).run(options)
            _ = try Compactor(job: job).compact(after: 0)
            let layout = ArchiveLayout(root: job.archive.root, job: job.name)
            if let bytes = try PosixFileSystem().read(layout.compactedFile),
                let mark = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
                let seq = mark["from_seq"] as? Int
            {
                marks.append(Int64(seq))
            }
        }
        #expect(marks.count == 12 && marks == marks.sorted() && marks.last! > marks.first! + 6, "\(marks)")
        #expect(try archivedLines(job) == archivedLines(jobA))
        #expect(Self.blobFiles(job).count == Self.blobFiles(jobA).count)
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
        // Closed buckets are marked; the open one is not.
        let data = job.archive.root + "/" + job.name + "/data"
        let markers = ((FileManager.default.enumerator(atPath: data)?.allObjects as? [String]) ?? []).filter {
            $0.hasSuffix("/_SUCCESS")
        }
        #expect(markers.count == 3, "\(markers)")
    }

    /// Found in review: an incremental verify whose mark is a line the compaction replaced
    /// counted that blob twice (and saved the count in its mark).
    @Test func anIncrementalVerifyWhoseMarkWasCompactedCountsLikeAFullOne() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource()
        let start = baseTime - 400_000_000
        for index in 0..<36 { source.append(timestamp: start + Int64(index) * 300_000_000) }
        var options = RunOptions()
        options.maxRecords = 4
        for run in 0..<9 {
            _ = try await ArchiveRunner(job: job, source: source).run(options)
            // Marks at the first and the middle blob of the first hour.
            if run == 0 || run == 1 { #expect(try Verifier(job: job).verify(deep: false, full: false).isClean) }
        }
        _ = try Compactor(job: job).compact(after: 0)
        let incremental = try Verifier(job: job).verify(deep: false, full: false)
        let full = try Verifier(job: job).verify(deep: false, full: true)
        #expect(full.isClean && incremental.isClean)
        #expect(incremental.after > 0)
        #expect(incremental.blobs == full.blobs)
        #expect(incremental.records == full.records)
        #expect(incremental.bytes == full.bytes)
    }

    @Test func aBucketStaysOpenUntilTheArchiveIsPastItsEndByTheGracePeriod() async throws {
        let dir = TempDirectory()
        let (job, _) = try await Self.cronArchive(dir)
        // The newest change is at 3 h 55 min: with a grace of 2 h only the first hour closed.
        let report = try Compactor(job: job).compact(after: 2 * 3600)
        #expect(report.blobs.count == 1)
        #expect(try Compactor(job: job).compact(after: 10 * 3600).blobs.isEmpty)
    }

    @Test func aTargetSizeCutsABucketIntoSeveralBlobs() async throws {
        let dir = TempDirectory()
        let (job, _) = try await Self.cronArchive(dir, hours: 2)
        let before = try archivedLines(job)
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let largest = archive.manifest.entries.compactMap(\.bytes).max()!
        let report = try Compactor(job: job).compact(targetSize: largest * 2, after: 0)
        // Three blobs an hour, at most two per compacted blob: one pair, the third left alone.
        #expect(report.blobs.count == 1 && report.blobs[0].replaces.count == 2)
        #expect(try archivedLines(job) == before)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    /// Stopped after its line, before deleting what it replaced: verify is clean and says so;
    /// the next compaction deletes the leftovers.
    @Test func aCompactionStoppedBeforeItsDeletesIsFinishedByTheNext() async throws {
        let dir = TempDirectory()
        let (job, _) = try await Self.cronArchive(dir)
        let before = try archivedLines(job)
        let fs = FaultInjectingFileSystem([.init(.remove, pathContains: "/data/", errno: EIO)])
        #expect(throws: FeedArchiveError.self) { try Compactor(job: job, fs: fs).compact(after: 0) }
        #expect(try archivedLines(job) == before)
        let report = try Verifier(job: job).verify(deep: true, full: true)
        #expect(report.isClean, "\(report.problems.map(\.message))")
        #expect(report.notes.contains { $0.contains("replaced by a compacted blob") })
        let next = try Compactor(job: job).compact(after: 0)
        #expect(next.leftovers.count == 3)
        #expect(try archivedLines(job) == before)
        let after = try Verifier(job: job).verify(deep: true, full: true)
        #expect(after.isClean && !after.notes.contains { $0.contains("replaced by a compacted blob") })
    }

    /// Stopped before its line: the new blob is recovery's to quarantine, nothing is lost.
    @Test func aCompactionStoppedBeforeItsLineLeavesTheArchiveAsItWas() async throws {
        let dir = TempDirectory()
        let (job, source) = try await Self.cronArchive(dir)
        let before = try archivedLines(job)
        let files = Self.blobFiles(job)
        let fs = FaultInjectingFileSystem([.init(.write, pathContains: "/manifest/")])
        #expect(throws: FeedArchiveError.self) { try Compactor(job: job, fs: fs).compact(after: 0) }
        #expect(try archivedLines(job) == before)
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.contains { $0.contains("quarantine") }, "\(summary.recovery)")
        #expect(Self.blobFiles(job) == files)
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
        #expect(try Compactor(job: job).compact(after: 0).blobs.count == 3)
        #expect(try archivedLines(job) == before)
    }

    /// A damaged (or missing) blob is verify's to report and a backfill's to mend: its bucket
    /// is left as it is, named in the report; the other buckets are compacted.
    @Test func aDamagedBlobKeepsItsBucketAsItIs() async throws {
        let dir = TempDirectory()
        let (job, _) = try await Self.cronArchive(dir)
        let files = Self.blobFiles(job)
        let victim = job.archive.root + "/" + job.name + "/data/" + files[1]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: victim))
        try FileManager.default.removeItem(atPath: job.archive.root + "/" + job.name + "/data/" + files[4])
        let report = try Compactor(job: job).compact(after: 0)
        #expect(report.blobs.count == 1)
        #expect(report.skipped.count == 2)
        #expect(report.skipped.contains { $0.contains(files[1]) && $0.contains("differs from its manifest line") })
        #expect(report.skipped.contains { $0.contains(files[4]) && $0.contains("missing") })
        let left = Self.blobFiles(job)
        #expect(files[0...2].allSatisfy(left.contains) && files[3...5].filter(left.contains).count == 2)
        #expect(FileManager.default.fileExists(atPath: victim))
        // No temp file is left behind.
        let tmp = try FileManager.default.contentsOfDirectory(
            atPath: job.archive.root + "/" + job.name + "/_feedarchive/tmp")
        #expect(tmp.isEmpty, "\(tmp)")
    }
}

/// Backfill lineages folded into compaction: a backfilled range and the live range it mends
/// become one blob, each change once, the duplicates counted.
@Suite struct FoldedCompactionTests {
    @Test func aBackfillAndTheLiveRangeItMendedBecomeOneBlob() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)
        let before = try archivedLines(job)
        // Lose the middle blob of hour 12, mend it with the backfill verify names.
        let lost = try #require(CompactionTests.blobFiles(job).filter { $0.contains("hour=12") }.dropFirst().first)
        try FileManager.default.removeItem(atPath: job.archive.root + "/mem/data/" + lost)
        let report = try Verifier(job: job).verify(deep: false, full: true)
        let fix = try #require(report.problems.first { $0.kind == "gap" }?.fix)
        let arguments = fix.split(separator: " ").map(String.init)
        _ = try await BackfillRunner(job: job, source: source).run(
            from: arguments[arguments.firstIndex(of: "--from")! + 1],
            until: arguments[arguments.firstIndex(of: "--until")! + 1], options: RunOptions())
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)

        let compacted = try Compactor(job: job).compact(after: 0)
        #expect(compacted.skipped.isEmpty, "\(compacted.skipped)")
        let twelve = try #require(compacted.blobs.first { $0.folder.hasSuffix("hour=12") })
        #expect(twelve.replaces.count == 4 && twelve.records == 12, "\(twelve.replaces) \(twelve.records)")
        #expect(CompactionTests.blobFiles(job).filter { $0.contains("hour=12") }.count == 1)
        #expect(try archivedLines(job) == before)
        for full in [true, false] {
            let check = try Verifier(job: job).verify(deep: true, full: full)
            #expect(check.isClean && check.records == 48, "full \(full): \(check.records) \(check.problems)")
        }
        let archive = JobArchive(job: job)
        _ = try archive.loadTail()
        #expect(try archive.totalsAtTail() == ArchiveTotals(try archive.store.read().0))
        #expect(try archive.totalsAtTail().records == 48)
    }

    @Test func aBackfillOfEverythingFoldsAwayItsDuplicates() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)
        let before = try archivedLines(job)
        _ = try await BackfillRunner(job: job, source: source).run(
            from: "beginning", until: nil, options: RunOptions())
        let duplicated = try Verifier(job: job).verify(deep: true, full: true)
        #expect(duplicated.isClean && duplicated.duplicateRanges > 0 && duplicated.records == 96)
        _ = try Verifier(job: job).verify(deep: true, full: false)  // a mark before compaction

        let compacted = try Compactor(job: job).compact(after: 0)
        #expect(compacted.blobs.count == 3 && compacted.blobs.allSatisfy { $0.duplicates == 12 && $0.records == 12 })
        // `cat` prints the live range as before; the open hour keeps its backfilled copy.
        var out: [UInt8] = []
        try ArchiveReader(job: job).read(from: nil, until: nil) { out += $0 }
        #expect(String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init) == before)
        #expect(try archivedLines(job) == before + before.suffix(12))
        for full in [true, false] {
            let check = try Verifier(job: job).verify(deep: true, full: full)
            // Hour 14 is still open: its live and backfilled blobs are both there.
            #expect(check.isClean && check.records == 60, "full \(full): \(check.records) \(check.problems)")
        }
        let archive = JobArchive(job: job)
        _ = try archive.loadTail()
        #expect(try archive.totalsAtTail() == ArchiveTotals(try archive.store.read().0))
        #expect(try archive.totalsAtTail().records == 60)
    }

    /// A lost live blob no backfill mended: the bucket stays as it is, and it is looked at again
    /// by the next compaction, which folds it once a backfill has run.
    @Test func aBucketWithAGapWaitsForItsBackfill() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)
        let lost = try #require(CompactionTests.blobFiles(job).filter { $0.contains("hour=11") }.dropFirst().first)
        try FileManager.default.removeItem(atPath: job.archive.root + "/mem/data/" + lost)
        let first = try Compactor(job: job).compact(after: 0)
        #expect(first.skipped.contains { $0.contains("hour=11") })
        #expect(CompactionTests.blobFiles(job).filter { $0.contains("hour=11") }.count == 2)
        let fix = try #require(
            try Verifier(job: job).verify(deep: false, full: true).problems.first { $0.kind == "gap" }?.fix)
        let arguments = fix.split(separator: " ").map(String.init)
        _ = try await BackfillRunner(job: job, source: source).run(
            from: arguments[arguments.firstIndex(of: "--from")! + 1],
            until: arguments[arguments.firstIndex(of: "--until")! + 1], options: RunOptions())
        let second = try Compactor(job: job).compact(after: 0)
        #expect(second.blobs.contains { $0.folder.hasSuffix("hour=11") }, "\(second.skipped)")
        #expect(CompactionTests.blobFiles(job).filter { $0.contains("hour=11") }.count == 1)
        #expect(try archivedLines(job).count == 48)
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
    }
}
