import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

@Suite struct RecoveryTests {
    /// An archive of 20 changes in 4 blobs (an epoch line and 4 blob lines).
    func archived(_ dir: TempDirectory) async throws -> (JobConfig, InMemorySource, JobArchive) {
        try await archivedMemoryFeed(in: dir)
    }

    func lastSegment(_ archive: JobArchive) throws -> String {
        archive.layout.manifestDirectory + "/" + (try archive.store.segments().last!)
    }

    @Test func tornLastManifestLineIsCutOff() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        let segment = try lastSegment(archive)
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data(#"{"seq":6,"prev":"abc","kind":"blo"#.utf8))
        handle.closeFile()
        for _ in 0..<3 { source.append() }
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.contains { $0.contains("torn manifest line") })
        #expect(try archivedLines(job).count == 23)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func checkpointBehindTheManifestIsRolledForward() async throws {
        let dir = TempDirectory()
        let (job, source, _) = try await archiveWithCheckpointBehind(in: dir)
        let report = try Verifier(job: job).verify(deep: false)
        #expect(report.isClean && report.notes.contains { $0.contains("rolls it forward") })
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.contains { $0.contains("rolled the checkpoint forward") })
        #expect(summary.records == 0)  // nothing re-read: no duplicates
        #expect(try archivedLines(job).count == 20)
    }

    @Test func checkpointAheadOfTheManifestIsRefused() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        var checkpoint = try #require(archive.checkpoint)
        checkpoint.manifestSeq += 3
        try checkpoint.write(to: archive.layout.checkpointFile, fs: PosixFileSystem(), mode: 0o640)
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".contains("ahead of the manifest")
                && "\(error)".contains("checkpoint.json")
        }
        let report = try Verifier(job: job).verify(deep: false)
        #expect(report.problems.contains { $0.kind == "checkpoint" })
    }

    @Test func corruptCheckpointIsADataErrorNamingTheFile() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        try Data("{\"format\":1,\"tok".utf8).write(to: URL(fileURLWithPath: archive.layout.checkpointFile))
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".contains(archive.layout.checkpointFile)
                && "\(error)".contains("mv ")
        }
        // The hint works: moved aside, the checkpoint is rebuilt from the manifest, nothing lost.
        try FileManager.default.moveItem(
            atPath: archive.layout.checkpointFile, toPath: archive.layout.checkpointFile + ".bad")
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.records == 0)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func aBrokenChainBeforeTheCheckpointIsLeftToVerify() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        let segment = try lastSegment(archive)
        var lines = try String(contentsOfFile: segment, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false)
        lines[2] = Substring(lines[2].replacingOccurrences(of: "\"records\":5", with: "\"records\":6"))
        try lines.joined(separator: "\n").write(toFile: segment, atomically: false, encoding: .utf8)
        // A run reads the manifest from its checkpoint's line on: it goes on.
        source.append()
        #expect(try await ArchiveRunner(job: job, source: source).run(RunOptions()).records == 1)
        let report = try Verifier(job: job).verify(deep: false)
        #expect(!report.isClean)
        #expect(
            report.problems.contains {
                "\($0)".contains("hash chain is broken") && "\($0)".contains("00000001.jsonl:4")
            })
    }

    @Test func aDamagedLineAfterTheCheckpointIsRefused() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        // The checkpoint names an earlier line: the lines after it are read, and one is damaged.
        let checkpoint = try #require(try Checkpoint.load(from: archive.layout.checkpointFile, fs: PosixFileSystem()))
        let segment = try lastSegment(archive)
        var lines = try String(contentsOfFile: segment, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false)
        let earlier = Int(checkpoint.manifestSeq) - 3
        let hash = sha256Hex(Array(lines[earlier - 1].utf8))
        lines[earlier] = Substring(lines[earlier].replacingOccurrences(of: "\"records\":5", with: "\"records\":6"))
        try lines.joined(separator: "\n").write(toFile: segment, atomically: false, encoding: .utf8)
        try Checkpoint(token: checkpoint.token, manifestSeq: Int64(earlier), manifestHash: hash).write(
            to: archive.layout.checkpointFile, fs: PosixFileSystem(), mode: 0o640)
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".contains("hash chain is broken")
        }
    }

    @Test func tempFilesAndABlobRenamedButNeverCommittedGoToQuarantine() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        let tail = try #require(try Checkpoint.load(from: archive.layout.checkpointFile, fs: PosixFileSystem()))
        let folder = archive.layout.dataDirectory + "/stray"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: folder + "/0_x_y.jsonl.zst", contents: Data("junk".utf8))
        _ = FileManager.default.createFile(atPath: folder + "/0_unnamed.jsonl.zst", contents: Data("junk".utf8))
        try Data("\(tail.manifestSeq + 1) data/stray/0_x_y.jsonl.zst\n".utf8).write(
            to: URL(fileURLWithPath: archive.layout.placingFile))
        _ = FileManager.default.createFile(
            atPath: archive.layout.tempDirectory + "/0_00000000000000000021.tmp", contents: Data("half".utf8))
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.filter { $0.contains("quarantine") }.count == 2)
        let quarantined = try FileManager.default.subpathsOfDirectory(atPath: archive.layout.quarantineDirectory)
        #expect(quarantined.contains { $0.hasSuffix("data/stray/0_x_y.jsonl.zst") })
        #expect(quarantined.contains { $0.hasSuffix("_feedarchive/tmp/0_00000000000000000021.tmp") })
        #expect(!FileManager.default.fileExists(atPath: archive.layout.placingFile))
        // A file nothing names and no run was placing is verify's to report; a run leaves it.
        let report = try Verifier(job: job).verify(deep: true)
        #expect(report.problems.map { "\($0)" }.joined().contains("0_unnamed.jsonl.zst"))
        try FileManager.default.removeItem(atPath: folder + "/0_unnamed.jsonl.zst")
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test func aBlobNamedByACommittedLineIsNeverQuarantined() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        _ = try archive.load()
        let blob = try #require(archive.manifest.entries.last(where: { $0.kind == .blob }))
        try Data("\(blob.seq) \(blob.path!)\n".utf8).write(to: URL(fileURLWithPath: archive.layout.placingFile))
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.isEmpty)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    /// Found in review: a line a killed run wrote but never fsynced sits complete in the page
    /// cache. Recovery must make it durable before rolling the checkpoint forward over it.
    @Test func rollForwardFsyncsTheManifestBeforeTheCheckpoint() async throws {
        let dir = TempDirectory()
        let (job, _, _) = try await archiveWithCheckpointBehind(in: dir, more: 5)
        let log = Mutex<[String]>([])
        let fs = FaultInjectingFileSystem { operation, path in
            log.withLock { $0.append("\(operation.rawValue) \(lastComponent(of: path))") }
        }
        let report = try JobArchive(job: job, fs: fs).recover()
        #expect(report.rolledForward != nil)
        let ops = log.withLock { $0 }
        let manifestSync = try #require(ops.firstIndex(of: "sync 00000001.jsonl"))
        let manifestFolderSync = try #require(ops.firstIndex(of: "syncDirectory manifest"))
        let checkpointWrite = try #require(ops.firstIndex(of: "create checkpoint.json.tmp"))
        #expect(manifestSync < checkpointWrite && manifestFolderSync < checkpointWrite)
    }
}
