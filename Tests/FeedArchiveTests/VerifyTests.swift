import Crypto
import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// The corruption matrix: each kind of damage is found, named with its path, and exits 1
/// (a non-clean report); duplicates and a pending roll-forward are not errors.
@Suite struct VerifyTests {
    struct Fixture {
        let dir = TempDirectory()
        let job: JobConfig
        let source = InMemorySource()
        let archive: JobArchive
        let entries: [ManifestEntry]

        init(changes: Int = 40) async throws {
            job = try memoryJob(in: dir, maxRecords: 8)
            for _ in 0..<changes { source.append() }
            _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
            archive = JobArchive(job: job)
            _ = try archive.load()
            entries = archive.manifest.entries
        }

        var segment: String { archive.layout.manifestDirectory + "/00000001.jsonl" }
        func blob(_ index: Int) -> ManifestEntry { entries.filter { $0.kind == .blob }[index] }
        func path(_ index: Int) -> String { archive.layout.absolute(blob(index).path!) }

        func verify(deep: Bool = true) throws -> VerifyReport { try Verifier(job: job).verify(deep: deep) }

        /// Replaces a blob's bytes and rewrites the manifest consistently (hash chain and
        /// checkpoint), so only the content check can notice.
        func replaceBlobConsistently(_ index: Int, lines: [String]) throws {
            let raw = Array((lines.joined(separator: "\n") + "\n").utf8)
            let bytes = try Compression.zstd.makeEncoder(level: 3, workers: 0).encodeAll(raw)
            try Data(bytes).write(to: URL(fileURLWithPath: path(index)))
            var rewritten = archive.manifest.entries
            let target = rewritten.firstIndex { $0.path == blob(index).path }!
            rewritten[target].sha256 = sha256Hex(bytes)
            rewritten[target].bytes = Int64(bytes.count)
            rewritten[target].rawBytes = Int64(raw.count)
            var previous = Manifest.zeroHash
            var text = ""
            for index in rewritten.indices {
                rewritten[index].prev = previous
                let line = rewritten[index].encodedLine()
                previous = sha256Hex(line)
                text += String(decoding: line, as: UTF8.self) + "\n"
            }
            try text.write(toFile: segment, atomically: false, encoding: .utf8)
            try Checkpoint(token: archive.checkpoint!.token, manifestSeq: rewritten.last!.seq, manifestHash: previous)
                .write(to: archive.layout.checkpointFile, fs: PosixFileSystem(), mode: 0o640)
        }

        func decodedLines(_ index: Int) throws -> [String] {
            let bytes = try #require(try PosixFileSystem().read(path(index)))
            return String(decoding: try Compression.zstd.makeDecoder().decodeAll(bytes), as: UTF8.self).split(
                separator: "\n"
            ).map(String.init)
        }
    }

    @Test func cleanArchiveIsClean() async throws {
        let fixture = try await Fixture()
        let report = try fixture.verify()
        #expect(report.isClean, "\(report.problems)")
        #expect(report.records == 40 && report.blobs == 5)
    }

    @Test func flippedByteIsAHashAndDecodeProblem() async throws {
        let fixture = try await Fixture()
        var bytes = try Data(contentsOf: URL(fileURLWithPath: fixture.path(1)))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: fixture.path(1)))
        let fast = try fixture.verify(deep: false)
        #expect(fast.problems.contains { $0.kind == "hash" && $0.path == fixture.blob(1).path })
        let deep = try fixture.verify(deep: true)
        #expect(deep.problems.contains { $0.kind == "decode" && $0.path == fixture.blob(1).path })
        #expect(
            deep.problems.contains {
                $0.kind == "gap" && $0.fix?.hasPrefix("feedarchive backfill mem --from memory:") == true
            })
    }

    @Test func truncatedBlobIsASizeProblem() async throws {
        let fixture = try await Fixture()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: fixture.path(2)))
        try bytes.prefix(bytes.count - 10).write(to: URL(fileURLWithPath: fixture.path(2)))
        let report = try fixture.verify()
        #expect(report.problems.contains { $0.kind == "size" && $0.path == fixture.blob(2).path })
        #expect(report.problems.contains { $0.kind == "decode" && $0.message.contains("truncated") })
    }

    @Test func deletedBlobIsMissingWithTheBackfillThatMendsIt() async throws {
        let fixture = try await Fixture()
        try FileManager.default.removeItem(atPath: fixture.path(3))
        let report = try fixture.verify(deep: false)
        #expect(report.problems.contains { $0.kind == "missing" && $0.path == fixture.blob(3).path })
        let gap = try #require(report.problems.first { $0.kind == "gap" })
        let from = try ContinuationToken.decode(String(gap.fix!.split(separator: " ")[4]))
        let until = try ContinuationToken.decode(String(gap.fix!.split(separator: " ")[6]))
        #expect(from.cursors["0"] == "24" && until.cursors["0"] == "32")
    }

    @Test func extraBlobIsStray() async throws {
        let fixture = try await Fixture()
        try Data("{}".utf8).write(to: URL(fileURLWithPath: fixture.archive.layout.dataDirectory + "/0_x_y.jsonl.zst"))
        let report = try fixture.verify(deep: false)
        #expect(report.problems.map(\.kind) == ["stray"])
        #expect(report.problems[0].path == "data/0_x_y.jsonl.zst")
    }

    @Test func deletedOrEditedManifestLineBreaksTheChain() async throws {
        let fixture = try await Fixture()
        let original = try String(contentsOfFile: fixture.segment, encoding: .utf8)
        var lines = original.split(separator: "\n").map(String.init)
        lines.remove(at: 2)
        try (lines.joined(separator: "\n") + "\n").write(toFile: fixture.segment, atomically: false, encoding: .utf8)
        let deleted = try fixture.verify(deep: false)
        #expect(deleted.problems.contains { $0.kind == "chain" && $0.path.hasSuffix("00000001.jsonl:3") })

        lines = original.split(separator: "\n").map(String.init)
        lines[1] = lines[1].replacingOccurrences(of: "\"records\":8", with: "\"records\":9")
        try (lines.joined(separator: "\n") + "\n").write(toFile: fixture.segment, atomically: false, encoding: .utf8)
        let edited = try fixture.verify(deep: false)
        #expect(edited.problems.contains { $0.kind == "chain" && $0.message.contains("hash chain is broken") })
    }

    @Test func checkpointAheadIsAProblemAndBehindIsANote() async throws {
        let fixture = try await Fixture()
        var checkpoint = try #require(fixture.archive.checkpoint)
        checkpoint.manifestSeq += 1
        try checkpoint.write(to: fixture.archive.layout.checkpointFile, fs: PosixFileSystem(), mode: 0o640)
        #expect(
            try fixture.verify(deep: false).problems.contains {
                $0.kind == "checkpoint" && $0.message.contains("ahead")
            })
        checkpoint.manifestSeq -= 2
        checkpoint.manifestHash = fixture.entries[Int(checkpoint.manifestSeq)].prev
        try checkpoint.write(to: fixture.archive.layout.checkpointFile, fs: PosixFileSystem(), mode: 0o640)
        let behind = try fixture.verify(deep: false)
        #expect(behind.isClean)
        #expect(behind.notes.contains { $0.contains("rolls it forward") })
    }

    @Test func recordsOutOfOrderOrOutsideTheRangeAreFoundByDeep() async throws {
        let fixture = try await Fixture()
        var lines = try fixture.decodedLines(1)
        lines.swapAt(2, 3)
        try fixture.replaceBlobConsistently(1, lines: lines)
        #expect(try fixture.verify(deep: false).isClean)  // only the content check can see it
        #expect(
            try fixture.verify(deep: true).problems.contains { $0.kind == "order" && $0.path == fixture.blob(1).path })

        var outside = try fixture.decodedLines(2)
        outside[7] = outside[7].replacingOccurrences(
            of: "\"pos\":\"00000000000000000024", with: "\"pos\":\"00000000000000000099")
        try fixture.replaceBlobConsistently(2, lines: outside)
        #expect(
            try fixture.verify(deep: true).problems.contains { $0.kind == "range" && $0.path == fixture.blob(2).path })
    }

    @Test func overlapIsCountedAsDuplicatesNotAnError() async throws {
        let fixture = try await Fixture()
        // Re-archive part of the range under another name (a backfill cut differently).
        let start = ContinuationToken(
            kind: "memory", source: try await fixture.source.identity().shortFingerprint, cursors: ["0": "4"])
        let until = ContinuationToken(kind: "memory", source: start.source, cursors: ["0": "13"])
        _ = try await BackfillRunner(job: fixture.job, source: fixture.source).run(
            from: start.encoded, until: until.encoded, options: RunOptions())
        let report = try fixture.verify()
        #expect(report.isClean, "\(report.problems)")
        #expect(report.duplicateRanges >= 1)
    }

    @Test func repairLoopDeleteVerifyBackfillVerify() async throws {
        let fixture = try await Fixture()
        try FileManager.default.removeItem(atPath: fixture.path(1))
        try FileManager.default.removeItem(atPath: fixture.path(3))
        let broken = try fixture.verify()
        let fixes = broken.problems.compactMap(\.fix).filter { $0.hasPrefix("feedarchive backfill") }
        #expect(fixes.count == 2)
        for fix in fixes {
            let words = fix.split(separator: " ").map(String.init)
            _ = try await BackfillRunner(job: fixture.job, source: fixture.source).run(
                from: words[4], until: words[6], options: RunOptions())
        }
        let mended = try fixture.verify()
        #expect(mended.isClean, "\(mended.problems)")
        #expect(FileManager.default.fileExists(atPath: fixture.path(1)))  // same bytes: the blob itself is back
        #expect(try archivedLines(fixture.job).count >= 40)
    }

    /// Found by scripts/torture: the same blob lost twice. The second run of the same backfill
    /// command must repair again, not resume a finished backfill and do nothing.
    @Test func sameBackfillCommandRepairsASecondLoss() async throws {
        let fixture = try await Fixture()
        for round in 1...2 {
            try FileManager.default.removeItem(atPath: fixture.path(2))
            let fix = try #require(try fixture.verify().problems.first { $0.kind == "gap" }?.fix)
            let words = fix.split(separator: " ").map(String.init)
            _ = try await BackfillRunner(job: fixture.job, source: fixture.source).run(
                from: words[4], until: words[6], options: RunOptions())
            let report = try fixture.verify()
            #expect(report.isClean, "round \(round): \(report.problems)")
        }
    }

    @Test func jobStartedAtNowThenBackfilledFromBeginningIsComplete() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 8, extra: "").withStart(.now)
        let source = InMemorySource()
        for _ in 0..<30 { source.append() }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        for _ in 0..<20 { source.append() }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try archivedLines(job).count == 20)
        _ = try await BackfillRunner(job: job, source: source).run(from: "beginning", until: nil, options: RunOptions())
        let report = try Verifier(job: job).verify(deep: true)
        #expect(report.isClean, "\(report.problems)")
        let positions = Set(try archivedLines(job).map(position(of:)))
        #expect(positions.count == 50)
    }

    @Test func acknowledgedGapIsANoteNotAProblem() async throws {
        let fixture = try await Fixture()
        try FileManager.default.removeItem(atPath: fixture.path(2))
        let gap = try #require(try fixture.verify().problems.first { $0.kind == "gap" })
        let words = gap.fix!.split(separator: " ").map(String.init)
        let lock = try fixture.archive.openForWriting()
        _ = try fixture.archive.recover()
        try fixture.archive.acknowledgeGap(
            from: try ContinuationToken.decode(words[4]), until: try ContinuationToken.decode(words[6]),
            reason: "test loss")
        lock.release()
        let report = try fixture.verify()
        #expect(!report.problems.contains { $0.kind == "gap" })
        #expect(report.notes.contains { $0.contains("acknowledged") })
    }
}

extension JobConfig {
    func withStart(_ start: StartSpec) -> JobConfig {
        var copy = self
        copy.start = start
        return copy
    }
}
