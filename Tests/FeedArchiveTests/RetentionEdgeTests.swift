import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// Edge cases of retention: marks at different seqs, two partitions, epochs, a stale reader,
/// a consumer's bookmark that retention removed, a clock ahead, an unreadable backfill plan, a
/// file two lines name.

/// Everything that must agree after prunes: verify full/incremental × fast/deep, checkpoint
/// totals, a full recount, and a recount of the current lines.
func retentionConsistency(_ job: JobConfig, _ label: String) throws -> [String] {
    var issues: [String] = []
    var counts: [(String, Int, Int64, Int64)] = []
    for (deep, full) in [(false, false), (true, false), (false, true), (true, true)] {
        let report = try Verifier(job: job).verify(deep: deep, full: full)
        if !report.isClean {
            issues.append(
                "\(label) deep=\(deep) full=\(full) after=\(report.after): \(report.problems.map { "\($0.kind) \($0.path) \($0.message)" })"
            )
        }
        counts.append(("deep=\(deep) full=\(full) after=\(report.after)", report.blobs, report.records, report.bytes))
    }
    let (manifest, _) = try JobArchive(job: job).store.read()
    var seen: Set<String> = []
    var blobs = 0
    var records: Int64 = 0
    var bytes: Int64 = 0
    for line in manifest.currentLines() where line.namesBlob {
        guard let path = line.path, seen.insert(path).inserted else { continue }
        blobs += 1
        records += line.records ?? 0
        bytes += line.bytes ?? 0
    }
    counts.append(("currentLines", blobs, records, bytes))
    let recount = ArchiveTotals(manifest)
    counts.append(("ArchiveTotals(full)", recount.blobs, recount.records, recount.bytes))
    let archive = JobArchive(job: job)
    _ = try archive.loadTail()
    let totals = try archive.totalsAtTail()
    counts.append(("totalsAtTail", totals.blobs, totals.records, totals.bytes))
    // Agree: the two full verifies, and the checkpoint's totals with a recount. (Verify counts
    // a file two lines name once, the totals count lines, and an incremental verify keeps what
    // its mark counted: where a backfill wrote files again these differ, a known limit.)
    let full = counts.filter { $0.0.contains("full=true") }
    if full[0].1 != full[1].1 || full[0].2 != full[1].2 || full[0].3 != full[1].3 {
        issues.append("\(label): full verifies differ: \(full)")
    }
    if recount != totals { issues.append("\(label): totals \(totals) differ from a recount \(recount)") }
    return issues
}

func catLinesOf(_ job: JobConfig) throws -> [String] {
    var out: [UInt8] = []
    try ArchiveReader(job: job).read(from: nil, until: nil) { out += $0 }
    return String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init)
}

@Suite(.serialized) struct RetentionAgreementTests {
    static let eleven = baseTime - 400_000_000  // 11:00

    /// Two partitions, marks at different seqs, compaction, prune, compaction, backfill after
    /// the prune from the beginning, fold, prune again.
    @Test(arguments: [(4, true), (100, true), (7, true), (4, false), (100, false)])
    func marksCompactionBackfillTwoPartitions(_ backfillBatch: Int, _ prune: Bool) async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource(partitions: ["a", "b"])
        var options = RunOptions()
        options.maxRecords = 4
        var issues: [String] = []
        func feed(_ hours: Range<Int>) async throws {
            for h in hours {
                for i in 0..<12 {
                    let ts = Self.eleven + Int64(h) * hour + Int64(i) * 300_000_000
                    source.append(partition: "a", timestamp: ts)
                    if i % 2 == 0 { source.append(partition: "b", timestamp: ts + 1_000_000) }
                }
                for _ in 0..<6 { _ = try await ArchiveRunner(job: job, source: source).run(options) }
            }
        }
        try await feed(0..<2)
        #expect(try Verifier(job: job).verify(deep: true, full: false).isClean)  // both marks here
        try await feed(2..<4)
        #expect(try Verifier(job: job).verify(deep: false, full: false).isClean)  // fast mark later
        let c1 = try Compactor(job: job).compact(after: 0)
        issues += ["compact1 \(c1.blobs.count) skipped \(c1.skipped)"].filter { _ in c1.blobs.isEmpty }
        try await feed(4..<5)
        let p1 = try Pruner(job: job).prune(before: Self.eleven + 2 * hour + hour / 2, after: 0, dryRun: !prune)
        issues += try retentionConsistency(job, "after prune 1 (\(p1.blobs.count) blobs, held \(p1.held))")
        let c2 = try Compactor(job: job).compact(after: 0)
        issues += try retentionConsistency(job, "after compact 2 (\(c2.blobs.count))")
        try await feed(5..<6)
        _ = try Verifier(job: job).verify(deep: true, full: false)
        let p2 = try Pruner(job: job).prune(before: Self.eleven + 4 * hour, after: 0, dryRun: !prune)
        issues += try retentionConsistency(job, "after prune 2 (\(p2.blobs.count) blobs, held \(p2.held))")

        // A backfill from the beginning re-covering pruned ranges.
        var bopt = RunOptions()
        bopt.maxRecords = Int64(backfillBatch)
        var bf = try await BackfillRunner(job: job, source: source).run(
            from: "beginning", until: nil, options: bopt)
        issues += try retentionConsistency(job, "after partial backfill (\(bf.records) records)")
        for _ in 0..<200 where !bf.stoppedBy.contains("until") {
            bf = try await BackfillRunner(job: job, source: source).run(from: "beginning", until: nil, options: bopt)
        }
        issues += try retentionConsistency(job, "after backfill (\(bf.records) records)")
        var lines: [String] = []
        do { lines = try catLinesOf(job) } catch { issues.append("cat after backfill: \(error)") }
        let c3 = try Compactor(job: job).compact(after: 0)
        issues += try retentionConsistency(job, "after compact 3 (\(c3.blobs.count), skipped \(c3.skipped))")
        do {
            let after = try catLinesOf(job)
            if after != lines {
                let a = Set(after), b = Set(lines)
                issues.append(
                    "cat changed by compact 3: before \(lines.count) after \(after.count) distinct \(b.count)/\(a.count); only before: \(b.subtracting(a).sorted().prefix(4)); only after: \(a.subtracting(b).sorted().prefix(4))"
                )
                issues.append(
                    "c3: \(c3.blobs.map { "\($0.folder) \($0.partition) replaces \($0.replaces) records \($0.records) dup \($0.duplicates)" })"
                )
            }
        } catch { issues.append("cat after compact 3: \(error)") }
        let p3 = try Pruner(job: job).prune(before: Self.eleven + 5 * hour, after: 0, dryRun: !prune)
        issues += try retentionConsistency(job, "after prune 3 (\(p3.blobs.count) blobs, held \(p3.held))")
        do { _ = try catLinesOf(job) } catch { issues.append("cat after prune 3: \(error)") }
        // once more: runs, compaction, prune of everything closed
        try await feed(6..<8)
        _ = try Compactor(job: job).compact(after: 0)
        _ = try Pruner(job: job).prune(before: Self.eleven + 7 * hour, after: 0, dryRun: !prune)
        issues += try retentionConsistency(job, "after prune 4")
        _ = try await StatusReport(job: job, source: .source(source))
        #expect(issues.isEmpty, "\(issues.joined(separator: "\n"))")
    }
}

@Suite(.serialized) struct RetentionMarkTests {
    static let eleven = baseTime - 400_000_000  // 11:00

    /// A deep mark in the middle of a bucket; the bucket's compact line straddles the mark and
    /// is then pruned; marks at different seqs continue.
    @Test func compactLineStraddlingTheDeepMarkIsPruned() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource(partitions: ["a", "b"])
        var options = RunOptions()
        options.maxRecords = 3
        var issues: [String] = []
        func add(_ from: Int, _ to: Int) async throws {
            for i in from..<to {
                let ts = Self.eleven + Int64(i) * 300_000_000
                source.append(partition: "a", timestamp: ts)
                source.append(partition: "b", timestamp: ts + 500_000)
            }
            for _ in 0..<12 { _ = try await ArchiveRunner(job: job, source: source).run(options) }
        }
        try await add(0, 6)  // 11:00-11:25
        #expect(try Verifier(job: job).verify(deep: true, full: false).isClean)
        try await add(6, 30)  // to 13:25
        #expect(try Verifier(job: job).verify(deep: false, full: false).isClean)
        _ = try Compactor(job: job).compact(after: 0)
        issues += try retentionConsistency(job, "after compact")
        try await add(30, 40)
        _ = try Pruner(job: job).prune(before: Self.eleven + hour, after: 0, dryRun: false)
        issues += try retentionConsistency(job, "after prune")
        _ = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        issues += try retentionConsistency(job, "after prune2")
        _ = try Compactor(job: job).compact(after: 0)
        issues += try retentionConsistency(job, "after compact2")
        #expect(issues.isEmpty, "\(issues.joined(separator: "\n"))")
    }
}

@Suite(.serialized) struct RetentionEdgeTests {
    static let eleven = baseTime - 400_000_000  // 11:00

    /// Before an epoch, lines "go each by itself": a blob behind a newer one is removed while
    /// the newer one stays, a hole in the old lineage (the same feed the live prefix rule protects).
    @Test func anOlderLineageLosesOnlyItsPrefix() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource()
        var options = RunOptions()
        options.maxRecords = 4
        for start in [Self.eleven, Self.eleven + 4 * hour, Self.eleven + hour / 2, Self.eleven + 5 * hour] {
            for index in 0..<4 { source.append(timestamp: start + Int64(index) * 60_000_000) }
            _ = try await ArchiveRunner(job: job, source: source).run(options)
        }
        // Same cut, no epoch: only the first blob (the prefix).
        _ = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0)
        _ = try await Epoch.start(job: job, from: .now, reason: "table recreated", source: .source(source))
        for index in 0..<4 { source.append(timestamp: Self.eleven + 8 * hour + Int64(index) * 60_000_000) }
        _ = try await ArchiveRunner(job: job, source: source).run(options)
        let report = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        #expect(report.blobs.count == 1, "\(report.blobs.map(\.path))")
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
    }

    /// A consumer's bookmark (`cat --from <to_token of a blob>`) that a prune removed.
    @Test func catFromATokenAPruneRemoved() async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        let (manifest, _) = try JobArchive(job: job).store.read()
        let token = manifest.entries.first { $0.kind == .blob }!.toToken!
        var before: [UInt8] = []
        try ArchiveReader(job: job).read(from: .token(token), until: nil) { before += $0 }
        _ = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        do {
            var out: [UInt8] = []
            try ArchiveReader(job: job).read(from: .token(token), until: nil) { out += $0 }
        } catch {
            Issue.record("cat --from a pruned blob's token: \(error)")
        }
    }

    /// retention with a wall clock that jumped forward.
    @Test func retentionWithAClockInTheFuture() async throws {
        let dir = TempDirectory()
        var (job, _) = try await CompactionTests.cronArchive(dir)
        job.retention = 400 * 86400
        let future = Date(timeIntervalSince1970: Double(Self.eleven) / 1e6 + 3 * 365 * 86400)
        let report = try #require(try Pruner(job: job).pruneIfDue(retention: 400 * 86400, now: future))
        #expect(report.blobs.isEmpty, "retention 400d removed blobs from 0 days ago")
    }

    /// A backfill plan that cannot be decoded does not hold the prune back.
    @Test func aCorruptBackfillPlanHoldsThePruneBack() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)
        var options = RunOptions()
        options.maxRecords = 3
        _ = try await BackfillRunner(job: job, source: source).run(from: "beginning", until: nil, options: options)
        let plans = job.archive.root + "/mem/_feedarchive/backfill"
        let name = try #require(
            try FileManager.default.contentsOfDirectory(atPath: plans).first { $0.hasSuffix(".json") })
        var text = try String(contentsOfFile: plans + "/" + name, encoding: .utf8)
        text.removeLast(2)  // torn
        try text.write(toFile: plans + "/" + name, atomically: true, encoding: .utf8)
        let report = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        #expect(report.blobs.isEmpty)
        #expect(report.held.contains { $0.contains("cannot be read") }, "\(report.held)")
    }
}

@Suite(.serialized) struct RetentionReaderTests {
    static let eleven = baseTime - 400_000_000  // 11:00

    /// `cat` started before a run's compaction and its retention (RunSession does both back to
    /// back): the blob it wants was replaced by a compact line that the prune then removed.
    @Test func catAcrossCompactionThenPruneOfTheCompactLine() async throws {
        let dir = TempDirectory()
        let (job, _) = try await CompactionTests.cronArchive(dir)
        let before = try catLinesOf(job)
        let stale = try ArchiveReader(job: job)
        _ = try Compactor(job: job).compact(after: 0)
        _ = try Pruner(job: job).prune(before: Self.eleven + 2 * hour, after: 0, dryRun: false)
        var out: [UInt8] = []
        do {
            try stale.read(from: nil, until: nil) { out += $0 }
            let lines = String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init)
            #expect(lines == Array(before.suffix(24)))
        } catch {
            Issue.record("stale cat: \(error)")
        }
        // verify that read the manifest before both
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
    }
}

@Suite(.serialized) struct RetentionSharedFileTests {
    /// A finished backfill that re-read live blobs with the same batching names the same files:
    /// retention then stops at the first such blob, and says nothing about why.
    @Test func aFileTwoLinesNameIsSaidToHoldRetentionBack() async throws {
        let dir = TempDirectory()
        let (job, source) = try await CompactionTests.cronArchive(dir)
        var options = RunOptions()
        options.maxRecords = 4
        var bf = try await BackfillRunner(job: job, source: source).run(from: "beginning", until: nil, options: options)
        for _ in 0..<50 where !bf.stoppedBy.contains("until") {
            bf = try await BackfillRunner(job: job, source: source).run(from: "beginning", until: nil, options: options)
        }
        let report = try Pruner(job: job).prune(before: baseTime - 400_000_000 + 2 * hour, after: 0, dryRun: false)
        #expect(!report.blobs.isEmpty || !report.held.isEmpty, "nothing pruned and no reason given")
    }
}
