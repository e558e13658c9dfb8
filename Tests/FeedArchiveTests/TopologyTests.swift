import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// Partitions that split mid-feed (as Cosmos feed ranges do): the runner writes a `split` line,
/// goes on with the children, and verify follows the parent's chain into them.
@Suite struct TopologyTests {
    @Test func aSplitLeavesAManifestLineAndTheChildrenAreArchived() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 4)
        let source = InMemorySource(partitions: ["a"])
        for _ in 0..<6 { source.append(partition: "a") }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        for _ in 0..<3 { source.append(partition: "a") }  // read in the same run as the split
        source.split("a", into: ["a1", "a2"])
        for _ in 0..<5 { source.append(partition: "a1") }
        for _ in 0..<2 { source.append(partition: "a2") }

        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.records == 10)
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let splits = archive.manifest.entries.filter { $0.kind == .split }
        try #require(splits.count == 1)
        let from = try ContinuationToken.decode(splits[0].fromToken!)
        let to = try ContinuationToken.decode(splits[0].toToken!)
        #expect(from.cursors == ["a": "9"])
        #expect(to.cursors == ["a1": "0", "a2": "0"])
        #expect(splits[0].part == "a")
        // The split line comes after the parent's last blob and before the children's first.
        let kinds = archive.manifest.entries.map { "\($0.kind.rawValue):\($0.part ?? "")" }
        let splitIndex = kinds.firstIndex(of: "split:a")!
        #expect(kinds[..<splitIndex].allSatisfy { !$0.hasPrefix("blob:a1") && !$0.hasPrefix("blob:a2") })
        #expect(kinds[splitIndex...].allSatisfy { $0 != "blob:a" })
        #expect(try ContinuationToken.decode(archive.checkpoint!.token).cursors == ["a1": "5", "a2": "2"])
        let report = try Verifier(job: job).verify(deep: true)
        #expect(report.isClean, "\(report.problems.map(\.message))")
        #expect(report.records == 16)

        // Later runs read only the children.
        source.append(partition: "a2")
        let again = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(again.records == 1)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    /// A signal that arrives while the batch before a split is read or committed: that batch is
    /// dropped or committed whole, and no split line may follow (it would skip a dropped batch).
    @Test func aSignalBeforeASplitWritesNoSplitLineAndLosesNothing() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 4)
        let source = InMemorySource(partitions: ["a"])
        for _ in 0..<6 { source.append(partition: "a") }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        for _ in 0..<7 { source.append(partition: "a") }  // one full batch, then 3 open at the split
        source.split("a", into: ["a1", "a2"])
        for _ in 0..<2 { source.append(partition: "a1") }

        // The signal comes at the first commit, while the split's read is handled.
        let archive = try await runInterruptedOnCommit(job, source) { _ in true }
        #expect(archive.manifest.entries.filter { $0.kind == .split }.isEmpty)

        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.records == 3 + 2 || summary.records == 2, "\(summary.records)")
        let report = try Verifier(job: job).verify(deep: true)
        #expect(report.isClean, "\(report.problems.map(\.message))")
        #expect(report.records == 6 + 7 + 2)
    }

    @Test func aLostBlobBeforeASplitIsAGapOfTheParent() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 3)
        let source = InMemorySource(partitions: ["a"])
        for _ in 0..<9 { source.append(partition: "a") }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        source.split("a", into: ["b", "c"])
        source.append(partition: "b")
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try Verifier(job: job).verify(deep: true).isClean)

        let archive = JobArchive(job: job)
        _ = try archive.load()
        let last = try #require(archive.manifest.entries.last { $0.kind == .blob && $0.part == "a" })
        try FileManager.default.removeItem(atPath: archive.layout.absolute(last.path!))
        let report = try Verifier(job: job).verify(deep: false)
        let gaps = report.problems.filter { $0.kind == "gap" }
        #expect(gaps.count == 1)
        #expect(gaps.first?.path.contains("partition a, before its split") == true, "\(gaps)")
        #expect(gaps.first?.fix?.contains("feedarchive backfill mem --from memory:") == true)
    }

    @Test func aSplitCutsNoBatchInsideAPage() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource(partitions: ["a"])
        for _ in 0..<7 { source.append(partition: "a", count: 2) }
        source.split("a", into: ["b"])
        for _ in 0..<3 { source.append(partition: "b", count: 3) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let archive = JobArchive(job: job)
        _ = try archive.load()
        // One blob for the parent's 14 changes (closed by the split), one for the child's 9.
        let blobs = archive.manifest.entries.filter { $0.kind == .blob }
        #expect(blobs.map(\.records) == [14, 9])
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    /// One partition whose reads keep failing does not hold back the others, and the run still
    /// fails with its error.
    @Test func aFailingPartitionIsSetAsideAndTheRunStillFails() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 100)
        let source = InMemorySource(partitions: ["a", "b"])
        for _ in 0..<5 {
            source.append(partition: "a")
            source.append(partition: "b")
        }
        source.failNextReads(2)  // partition a's first two reads: all its attempts
        var options = RunOptions()
        options.retry = RetryPolicy(attempts: 2, initialDelay: 0.01, maxDelay: 0.02)
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(options)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 69
        }
        let lines = try archivedLines(job)
        #expect(lines.count == 5)
        #expect(lines.allSatisfy { $0.contains(#""part":"b""#) })
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try archivedLines(job).count == 10)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }
}
