import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

/// `prune` removes whole blobs before a cut, per partition only the oldest, only what a clean
/// verify proved, only closed buckets, nothing while a backfill is unfinished; verify proves
/// the rest complete, and totals, `cat` and compaction go on from there.
@Suite struct RetentionTests {
    static let eleven = baseTime - 400_000_000  // 2026-11-18T11:00:00Z

    static func pruneCount(_ job: JobConfig) throws -> Int {
        let (manifest, _) = try JobArchive(job: job).store.read()
        return manifest.prunedSeqs.count
    }

    @Test func theOldestWholeBlobsGoAndVerifyProvesTheRest() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)  // 11:00 to 15:00, 3 blobs an hour
        let before = try archivedLines(job)
        let files = CompactionTests.blobFiles(job)
        #expect(files.count == 12)
        let cut = Self.eleven + 2 * hour  // 13:00: the hours 11 and 12 go

        let dry = try Pruner(job: job).prune(before: cut, after: 0)
        #expect(dry.dryRun && dry.blobs.count == 6 && dry.records == 24, "\(dry.held)")
        #expect(CompactionTests.blobFiles(job) == files, "a dry run deleted files")
        #expect(try Self.pruneCount(job) == 0)

        let report = try Pruner(job: job).prune(before: cut, after: 0, dryRun: false)
        #expect(report.blobs.count == 6 && report.lines.count == 1 && report.held.isEmpty)
        #expect(CompactionTests.blobFiles(job).count == 6)
        #expect(report.blobs.allSatisfy { $0.path.contains("hour=11") || $0.path.contains("hour=12") })
        // The hour folders that held only pruned blobs are gone, markers and all.
        let data = job.archive.root + "/mem/data"
        let hours = (FileManager.default.enumerator(atPath: data)?.allObjects as? [String] ?? []).filter {
            $0.hasSuffix("hour=11") || $0.hasSuffix("hour=12")
        }
        #expect(hours.isEmpty, "\(hours)")
        // `cat` holds what is left, in order; verify, full and incremental, proves it.
        #expect(try archivedLines(job) == Array(before.suffix(24)))
        for full in [false, true] {
            let check = try Verifier(job: job).verify(deep: true, full: full)
            #expect(check.isClean, "full \(full): \(check.problems.map(\.message))")
            #expect(check.blobs == 6 && check.records == 24, "full \(full): \(check.blobs) blobs, \(check.records)")
        }
        let archive = JobArchive(job: job)
        _ = try archive.loadTail()
        let totals = try archive.totalsAtTail()
        #expect(totals.blobs == 6 && totals.records == 24)
        #expect(totals == ArchiveTotals(try archive.store.read().0))

        // Nothing more before the same cut; the job, compaction and verify go on.
        #expect(try Pruner(job: job).prune(before: cut, after: 0, dryRun: false).blobs.isEmpty)
        for index in 0..<6 { source.append(timestamp: Self.eleven + 5 * hour + Int64(index) * 300_000_000) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let compacted = try Compactor(job: job).compact(after: 0)
        #expect(!compacted.blobs.isEmpty)
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
        #expect(try archivedLines(job).count == 30)
        // A later cut prunes the compacted blobs too.
        let later = try Pruner(job: job).prune(before: Self.eleven + 4 * hour, after: 0, dryRun: false)
        #expect(later.blobs.count == 2, "\(later.blobs.map(\.path))")
        let after = try Verifier(job: job).verify(deep: true, full: true)
        #expect(after.isClean && after.records == 6, "\(after.records): \(after.problems.map(\.message))")
        #expect(try archivedLines(job).count == 6)
    }

    /// A cut later than the feed takes only closed buckets: the archive must hold changes the
    /// grace past a bucket's end before its blobs may go.
    @Test func openBucketsStay() async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        // Newest change 14:55; with an hour's grace the buckets ending by 13:55 are closed.
        let report = try Pruner(job: job).prune(before: Self.eleven + 10 * hour, dryRun: false)
        #expect(report.blobs.count == 6, "\(report.blobs.map(\.path))")
        #expect(try Verifier(job: job).verify(deep: false, full: true).isClean)
    }

    /// A blob with a change after the cut ends the prefix: a late blob behind it stays, and the
    /// archive is one range from there on.
    @Test func onlyThePrefixBeforeTheFirstNewerBlobGoes() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource()
        var options = RunOptions()
        options.maxRecords = 4
        for start in [Self.eleven, Self.eleven + 4 * hour, Self.eleven + hour / 2, Self.eleven + 5 * hour] {
            for index in 0..<4 { source.append(timestamp: start + Int64(index) * 60_000_000) }
            _ = try await ArchiveRunner(job: job, source: source).run(options)
        }
        let report = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        #expect(report.blobs.count == 1, "\(report.blobs.map(\.path))")
        #expect(try archivedLines(job).count == 12)
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
    }

    @Test func aProblemVerifyFindsHoldsEverythingBack() async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        let files = CompactionTests.blobFiles(job)
        try FileManager.default.removeItem(atPath: job.archive.root + "/mem/data/" + files[7])
        let report = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        #expect(report.blobs.isEmpty)
        #expect(report.held.contains { $0.contains("verify found") }, "\(report.held)")
        #expect(CompactionTests.blobFiles(job).count == 11)
        #expect(try Self.pruneCount(job) == 0)
    }

    @Test func anUnfinishedBackfillHoldsEverythingBack() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)
        var options = RunOptions()
        options.maxRecords = 3
        _ = try await BackfillRunner(job: job, source: source).run(from: "beginning", until: nil, options: options)
        let report = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        #expect(report.blobs.isEmpty)
        #expect(report.held.contains { $0.contains("backfill") && $0.contains("unfinished") }, "\(report.held)")

        // Once it has finished, the prune goes ahead, backfilled blobs of the range included.
        _ = try await BackfillRunner(job: job, source: source).run(
            from: "beginning", until: nil, options: RunOptions())
        let done = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        #expect(done.held.isEmpty && done.blobs.count > 6, "\(done.held) \(done.blobs.map(\.path))")
        let check = try Verifier(job: job).verify(deep: true, full: true)
        #expect(check.isClean, "\(check.problems.map(\.message))")
    }

    /// A prune stopped after its line and before deleting: the files are leftovers that verify
    /// notes and the next prune deletes.
    @Test func aPruneStoppedBeforeItsDeletesIsFinishedByTheNext() async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        let fs = FaultInjectingFileSystem([.init(.remove, pathContains: "/data/", errno: EIO)])
        #expect(throws: FeedArchiveError.self) {
            try Pruner(job: job, fs: fs).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        }
        #expect(try Self.pruneCount(job) == 6)
        let check = try Verifier(job: job).verify(deep: true, full: true)
        #expect(check.isClean && check.notes.contains { $0.contains("still there") }, "\(check.problems)")
        let next = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        #expect(next.blobs.isEmpty && next.leftovers.count == 6)
        #expect(CompactionTests.blobFiles(job).count == 6)
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
    }

    @Test func retentionInTheJobRunsAtMostOnceAnHour() async throws {
        let dir = TempDirectory()
        let (plain, _) = try await CompactionTests.cronArchive(dir)
        var job = plain
        job.retention = 3600
        let now = Date(timeIntervalSince1970: Double(Self.eleven + 10 * hour) / 1e6)
        let first = try #require(try Pruner(job: job).pruneIfDue(retention: 3600, now: now))
        #expect(first.blobs.count == 6)  // the closed buckets
        #expect(try Pruner(job: job).pruneIfDue(retention: 3600, now: now.addingTimeInterval(600)) == nil)
        #expect(try Pruner(job: job).pruneIfDue(retention: 3600, now: now.addingTimeInterval(3600)) != nil)

        let parsed = try memoryJob(in: dir, extra: "retention: 400d\n")
        #expect(parsed.retention.map { Int($0) } == 400 * 86400)
        #expect(throws: FeedArchiveError.self) { try memoryJob(in: dir, extra: "retention: 10m\n") }
    }
}

/// `_feedarchive/files.txt` lists exactly the live blobs the manifest holds, after runs,
/// backfills, compactions and prunes, and a list one command behind is brought up to date.
@Suite struct LiveFilesTests {
    /// The rows of the list, `seq<TAB>path`, sorted.
    static func listed(_ job: JobConfig) throws -> [String] {
        let text = try String(contentsOfFile: job.archive.root + "/mem/_feedarchive/files.txt", encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.first == "seq\tpath")
        #expect(text.hasSuffix("\n"))
        return lines.dropFirst().map(String.init).sorted()
    }

    /// What the manifest holds live, as rows.
    static func live(_ job: JobConfig) throws -> [String] {
        let (manifest, _) = try JobArchive(job: job).store.read()
        return manifest.currentLines().filter(\.namesBlob).map { "\($0.seq)\t\($0.path!)" }.sorted()
    }

    static func paths(_ rows: [String]) -> [String] { Set(rows.map { String($0.split(separator: "\t")[1]) }).sorted() }

    @Test func theListIsTheLiveSetAfterEveryCommand() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)
        #expect(try Self.listed(job) == Self.live(job))
        #expect(try Self.listed(job).count == 12)
        _ = try await BackfillRunner(job: job, source: source).run(
            from: "beginning", until: nil, options: RunOptions())
        #expect(try Self.listed(job) == Self.live(job))
        _ = try Compactor(job: job).compact(after: 0)
        #expect(try Self.listed(job) == Self.live(job))
        _ = try Pruner(job: job).prune(before: RetentionTests.eleven + 2 * hour, after: 0, dryRun: false)
        let files = CompactionTests.blobFiles(job).map { "data/" + $0 }
        #expect(try Self.listed(job) == Self.live(job))
        #expect(Self.paths(try Self.listed(job)) == files.sorted())

        // A command stopped after the list and before its state file: the lines are applied
        // again, to the same result.
        let state = job.archive.root + "/mem/_feedarchive/files.json"
        try Data(#"{"manifest_seq":1}"#.utf8).write(to: URL(fileURLWithPath: state))
        for index in 0..<4 { source.append(timestamp: RetentionTests.eleven + 6 * hour + Int64(index) * 60_000_000) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try Self.listed(job) == Self.live(job))
        // An append torn by a crash, and rows appended before the state was written: cut
        // off, and not listed twice.
        let list = job.archive.root + "/mem/_feedarchive/files.txt"
        let handle = try #require(FileHandle(forWritingAtPath: list))
        handle.seekToEndOfFile()
        handle.write(Data("999\tdata/torn".utf8))
        try handle.close()
        for index in 0..<2 {
            source.append(timestamp: RetentionTests.eleven + 6 * hour + Int64(10 + index) * 60_000_000)
        }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try Self.listed(job) == Self.live(job))
        let rows = try Self.listed(job)
        try Data(#"{"manifest_seq":\#(try JobArchive(job: job).store.read().0.tailSeq - 1)}"#.utf8).write(
            to: URL(fileURLWithPath: state))
        source.append(timestamp: RetentionTests.eleven + 6 * hour + 20 * 60_000_000)
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try Self.listed(job) == Self.live(job))
        #expect(try Self.listed(job).count == rows.count + 1)
        // Without its state the list is rebuilt from the manifest.
        try FileManager.default.removeItem(atPath: state)
        source.append(timestamp: RetentionTests.eleven + 7 * hour)
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try Self.listed(job) == Self.live(job))
    }
}

/// A partition that went quiet holds every bucket after its newest change open, for compaction
/// and retention alike; both say so instead of doing nothing silently.
@Suite struct QuietPartitionTests {
    @Test func aQuietPartitionIsNamed() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource(partitions: ["a", "b"])
        var options = RunOptions()
        options.maxRecords = 4
        let start = RetentionTests.eleven
        for index in 0..<12 { source.append(partition: "a", timestamp: start + Int64(index) * 300_000_000) }
        _ = try await ArchiveRunner(job: job, source: source).run(options)
        // b has nothing yet.
        let none = try Compactor(job: job).compact(after: 0)
        #expect(none.blobs.isEmpty)
        #expect(none.skipped.contains { $0.contains("partition b") && $0.contains("no change") }, "\(none.skipped)")

        source.append(partition: "b", timestamp: start)
        for index in 0..<60 {
            source.append(partition: "a", timestamp: start + hour + Int64(index) * 30 * 60_000_000)
        }
        for _ in 0..<20 { _ = try await ArchiveRunner(job: job, source: source).run(options) }
        let held = try Compactor(job: job).compact(after: 0)
        #expect(
            held.skipped.contains { $0.contains("partition b") && $0.contains("more than a day behind") },
            "\(held.skipped)")
        let pruned = try Pruner(job: job).prune(before: start + 20 * hour, after: 0, dryRun: false)
        #expect(pruned.held.contains { $0.contains("partition b") }, "\(pruned.held)")
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
    }
}

/// Readers take no lock: a compaction or prune that commits while `cat` or `verify` reads
/// deletes files their manifest read still names. Neither may report a loss, and `cat` prints
/// every change once.
@Suite struct ReaderRaceTests {
    @Test func catReadingAnOlderManifestGetsTheCompactedBlobInstead() async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        let before = try archivedLines(job)
        let reader = try ArchiveReader(job: job)  // the manifest as it was
        _ = try Compactor(job: job).compact(after: 0)
        var out: [UInt8] = []
        try reader.read(from: nil, until: nil) { out += $0 }
        let lines = String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(lines == before)

        let stale = try ArchiveReader(job: job)
        _ = try Pruner(job: job).prune(before: RetentionTests.eleven + 2 * hour, after: 0, dryRun: false)
        out = []
        try stale.read(from: nil, until: nil) { out += $0 }
        #expect(
            String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init) == Array(before.suffix(24)))
    }

    @Test func verifyDuringACompactionReportsNothingMissing() async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        let compacted = Mutex(false)
        let report = try Verifier(job: job).verify(deep: true, full: true) { _, _ in
            if !compacted.withLock({ $0 }) {
                compacted.withLock { $0 = true }
                _ = try? Compactor(job: job).compact(after: 0)
            }
        }
        #expect(report.isClean, "\(report.problems.map(\.message))")
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
    }
}

/// verify does not take a compact or prune line's word for what it names.
@Suite struct NamedLinesTests {
    /// Rewrites the manifest with `edit` applied to the line of `seq`, re-chaining the hashes
    /// after it (a forged but well-formed manifest), and drops the checkpoint's hash claim.
    static func forge(_ job: JobConfig, seq: Int64, _ edit: (inout ManifestEntry) -> Void) throws {
        let archive = JobArchive(job: job)
        let (manifest, _) = try archive.store.read()
        var prev = Manifest.zeroHash
        var text: [UInt8] = []
        for var entry in manifest.entries {
            if entry.seq == seq { edit(&entry) }
            entry.prev = prev
            let line = entry.encodedLine()
            prev = sha256Hex(line)
            text += line + [0x0A]
        }
        let dir = archive.layout.manifestDirectory
        try Data(text).write(to: URL(fileURLWithPath: dir + "/" + Manifest.segmentName(forSeq: 1)))
        try FileManager.default.removeItem(atPath: archive.layout.checkpointFile)
    }

    @Test(arguments: ["an extra seq", "records", "another partition's order"])
    func aForgedCompactLineIsAChainProblem(_ what: String) async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        _ = try Compactor(job: job).compact(after: 0)
        let (manifest, _) = try JobArchive(job: job).store.read()
        let compact = try #require(manifest.entries.first { $0.kind == .compact })
        #expect(try Verifier(job: job).verify(deep: false, full: true).isClean)
        try Self.forge(job, seq: compact.seq) { line in
            switch what {
            case "an extra seq": line.replaces! += [compact.replaces!.last! + 4]
            case "records": line.records! += 1
            default: line.replaces!.reverse()
            }
        }
        let report = try Verifier(job: job).verify(deep: false, full: true)
        #expect(
            report.problems.contains { $0.kind == "chain" && $0.path.contains("seq \(compact.seq)") },
            "\(what): \(report.problems)")
    }
}
