import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@Suite struct ArchiveReaderTests {
    /// 20 single-change groups one second apart, in blobs of 5.
    func timedArchive(in dir: TempDirectory) async throws -> (JobConfig, InMemorySource, JobArchive) {
        let job = try memoryJob(in: dir, maxRecords: 5)
        let source = InMemorySource()
        for index in 0..<20 { source.append(timestamp: baseTime + Int64(index) * 1_000_000) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let archive = JobArchive(job: job)
        _ = try archive.load()
        return (job, source, archive)
    }

    func read(_ job: JobConfig, from: ArchiveReader.Bound? = nil, until: ArchiveReader.Bound? = nil) throws -> [String]
    {
        var bytes: [UInt8] = []
        try ArchiveReader(job: job).read(from: from, until: until) { bytes += $0 }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// The groups (1-based) of the changes read.
    func groups(_ lines: [String]) -> [Int] { lines.map { Int(position(of: $0).prefix(20))! } }

    @Test func readsEveryLiveChangeInFeedOrder() async throws {
        let dir = TempDirectory()
        let (job, _, _) = try await timedArchive(in: dir)
        let lines = try read(job)
        #expect(lines == (try archivedLines(job)))
        #expect(groups(lines) == Array(1...20))
    }

    /// The groups of a blob's changes, from its manifest line.
    func groups(of blob: ManifestEntry) -> [Int] {
        Array(Int(blob.firstPos!.prefix(20))!...Int(blob.lastPos!.prefix(20))!)
    }

    @Test func tokenBoundsSelectWholeBlobs() async throws {
        let dir = TempDirectory()
        let (job, _, archive) = try await timedArchive(in: dir)
        let blobs = archive.manifest.entries.filter { $0.kind == .blob }
        #expect(blobs.count >= 4)
        let after = try #require(blobs[0].toToken)
        let through = try #require(blobs[2].toToken)
        #expect(
            groups(try read(job, from: .token(after), until: .token(through))) == groups(of: blobs[1])
                + groups(of: blobs[2]))
        #expect(groups(try read(job, from: .token(through))) == Array(groups(of: blobs[3]).first!...20))
        #expect(groups(try read(job, until: .token(after))) == groups(of: blobs[0]))
        #expect(try read(job, from: .token(through), until: .token(after)).isEmpty)
    }

    @Test func timeBoundsFilterEachChangeOnItsTimestamp() async throws {
        let dir = TempDirectory()
        let (job, _, _) = try await timedArchive(in: dir)
        let from = ArchiveReader.Bound(formatRFC3339(microseconds: baseTime + 3_000_000))
        let until = ArchiveReader.Bound(formatRFC3339(microseconds: baseTime + 11_000_000))
        #expect(from == .time(baseTime + 3_000_000))
        // from is inclusive, until exclusive: the changes at seconds 3 to 10, groups 4 to 11.
        #expect(groups(try read(job, from: from, until: until)) == Array(4...11))
        #expect(groups(try read(job, until: until)) == Array(1...11))
    }

    @Test func aTokenAtNoBlobBoundaryIsAUsageError() async throws {
        let dir = TempDirectory()
        let (job, source, _) = try await timedArchive(in: dir)
        let inside = ContinuationToken(
            kind: "memory", source: try await source.identity().shortFingerprint, cursors: ["0": "7"]
        ).encoded
        #expect(ArchiveReader.Bound(inside) == .token(inside))
        #expect {
            _ = try read(job, until: .token(inside))
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 64
                && "\(error)".hasPrefix("--until \(inside.prefix(40))…: not a time")
        }
    }

    @Test func aMissingBlobOrADamagedManifestIsADataError() async throws {
        let dir = TempDirectory()
        let (job, _, archive) = try await timedArchive(in: dir)
        let blob = try #require(archive.manifest.entries.first { $0.kind == .blob && $0.seq > 2 })
        try FileManager.default.removeItem(atPath: archive.layout.absolute(try #require(blob.path)))
        #expect {
            _ = try read(job)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65
                && "\(error)".contains("the blob named by manifest seq \(blob.seq) is missing")
        }

        let segment = archive.layout.manifestDirectory + "/" + (try #require(try archive.store.segments().first))
        var text = try String(contentsOfFile: segment, encoding: .utf8)
        text = text.replacingOccurrences(of: #""kind":"blob""#, with: #""kind":"blub""#)
        try text.write(toFile: segment, atomically: false, encoding: .utf8)
        #expect {
            _ = try ArchiveReader(job: job)
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".hasPrefix(segment + ":")
        }
    }

    @Test func backfillLineagesAreLeftOut() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 5).withStart(.now)
        let source = InMemorySource()
        for _ in 0..<10 { source.append() }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        for _ in 0..<10 { source.append() }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        _ = try await BackfillRunner(job: job, source: source).run(from: "beginning", until: nil, options: RunOptions())
        #expect(try archivedLines(job).count > 10)  // the backfill's blobs are in the archive
        #expect(groups(try read(job)) == Array(11...20))
    }

    /// Output comes in chunks of whole lines, each above 1 MiB but the last.
    @Test func largeArchivesStreamInChunksOfWholeLines() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 5)
        let source = InMemorySource()
        let padding = String(repeating: "x", count: 100_000)
        for _ in 0..<30 { source.append(document: { #"{"pad":"\#(padding)","index":\#($0)}"# }) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        var chunks: [[UInt8]] = []
        try ArchiveReader(job: job).read(from: nil, until: nil) { chunks.append($0) }
        #expect(chunks.count >= 2)
        #expect(chunks.dropLast().allSatisfy { $0.count > 1 << 20 })
        #expect(chunks.allSatisfy { $0.last == 0x0A })
        let lines = String(decoding: chunks.joined(), as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(lines == (try archivedLines(job)))
        #expect(groups(lines) == Array(1...30))
    }
}
