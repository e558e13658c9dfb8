import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// `verify` continues from the last clean verify: it checks what was added since, proves it
/// the same way, and `--full` checks everything again.
@Suite struct IncrementalVerifyTests {
    func incremental(_ job: JobConfig, deep: Bool = false) throws -> VerifyReport {
        try Verifier(job: job).verify(deep: deep, full: false)
    }

    func blobPaths(_ job: JobConfig) throws -> [String] {
        let archive = JobArchive(job: job)
        _ = try archive.load()
        return archive.manifest.entries.filter { $0.kind == .blob }.compactMap(\.path)
    }

    @Test func aVerifyAfterACleanOneChecksOnlyTheNewLinesAndAgreesWithAFullOne() async throws {
        let dir = TempDirectory()
        let (job, source, _) = try await archivedMemoryFeed(in: dir)
        let first = try incremental(job)
        #expect(first.isClean)
        #expect(first.after == 0, "no mark yet: everything is checked")
        for round in 0..<3 {
            for _ in 0..<(7 + round) { source.append() }
            _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
            let next = try incremental(job)
            let whole = try Verifier(job: job).verify(deep: false)
            #expect(next.isClean, "\(next.problems)")
            #expect(next.after > 0)
            #expect(next.blobs == whole.blobs)
            #expect(next.records == whole.records)
            #expect(next.records == Int64(source.changes().count))
            #expect(next.bytes == whole.bytes)
            #expect(next.duplicateRanges == whole.duplicateRanges)
        }
        // Nothing new: still clean, nothing to check.
        #expect(try incremental(job).isClean)
    }

    @Test func aNewBlobLostAfterTheMarkIsAGapWithItsBackfillAndTheRepairIsSeen() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir)
        #expect(try incremental(job).isClean)
        for _ in 0..<10 { source.append() }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let lost = try #require(try blobPaths(job).last)
        try FileManager.default.removeItem(atPath: archive.layout.absolute(lost))
        source.append()
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())

        let report = try incremental(job)
        #expect(report.problems.contains { $0.kind == "missing" && $0.path == lost })
        let gap = try #require(report.problems.first { $0.kind == "gap" })
        #expect(gap.fix?.hasPrefix("feedarchive backfill") == true)
        // Not clean: the mark stays, so the next verify checks the same lines again.
        #expect(!(try incremental(job)).isClean)

        let arguments = gap.fix!.split(separator: " ").map(String.init)
        let from = arguments[arguments.firstIndex(of: "--from")! + 1]
        let until = arguments[arguments.firstIndex(of: "--until")! + 1]
        _ = try await BackfillRunner(job: job, source: source).run(from: from, until: until, options: RunOptions())
        let mended = try incremental(job)
        #expect(mended.isClean, "\(mended.problems)")
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func aBlobChangedBeforeTheMarkIsFoundByFullOnly() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir)
        #expect(try incremental(job).isClean)
        let old = try #require(try blobPaths(job).first)
        let handle = try #require(FileHandle(forWritingAtPath: archive.layout.absolute(old)))
        handle.seek(toFileOffset: 10)
        handle.write(Data([0xFF]))
        try handle.close()
        source.append()
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try incremental(job).isClean)
        let full = try Verifier(job: job).verify(deep: false, full: true)
        #expect(full.problems.contains { $0.path == old && $0.kind == "hash" })
    }

    @Test func aStrayNextToANewBlobIsReported() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir)
        #expect(try incremental(job).isClean)
        source.append()
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let newest = try #require(try blobPaths(job).last)
        let stray = parentDirectory(of: newest) + "/0_99_99.jsonl.zst"
        _ = FileManager.default.createFile(atPath: archive.layout.absolute(stray), contents: Data("x".utf8))
        let report = try incremental(job)
        #expect(report.problems.contains { $0.kind == "stray" && $0.path == stray })
    }

    @Test func aManifestRewrittenUnderTheMarkIsCheckedFromTheOrigin() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir)
        #expect(try incremental(job).isClean)
        // Another archive under the same name: the mark's line is not there any more.
        try FileManager.default.removeItem(atPath: archive.layout.jobRoot)
        let fresh = InMemorySource()
        for _ in 0..<3 { fresh.append() }
        _ = try await ArchiveRunner(job: job, source: fresh).run(RunOptions())
        _ = source
        let report = try incremental(job)
        #expect(report.after == 0)
        #expect(report.isClean, "\(report.problems)")
        #expect(report.records == 3)
    }

    @Test func theDeepMarkIsKeptApartFromTheFastOne() async throws {
        let dir = TempDirectory()
        let (job, source, _) = try await archivedMemoryFeed(in: dir)
        #expect(try incremental(job).isClean)
        let deep = try incremental(job, deep: true)
        #expect(deep.after == 0, "no deep verify yet: every blob is decoded")
        source.append()
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try incremental(job).after > 0)
        let again = try incremental(job, deep: true)
        #expect(again.after > 0)
        #expect(again.isClean)
        #expect(again.records == Int64(source.changes().count))
    }
}
