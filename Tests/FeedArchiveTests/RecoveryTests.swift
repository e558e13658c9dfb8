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

    @Test func brokenChainBeforeTheTailIsRefused() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        let segment = try lastSegment(archive)
        var lines = try String(contentsOfFile: segment, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false)
        lines[2] = Substring(lines[2].replacingOccurrences(of: "\"records\":5", with: "\"records\":6"))
        try lines.joined(separator: "\n").write(toFile: segment, atomically: false, encoding: .utf8)
        await #expect {
            try await ArchiveRunner(job: job, source: source).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".contains("hash chain is broken")
                && "\(error)".contains("00000001.jsonl:4")
        }
    }

    @Test func strayBlobsAndTempFilesGoToQuarantine() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archived(dir)
        let folder = archive.layout.dataDirectory + "/stray"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: folder + "/0_x_y.jsonl.zst", contents: Data("junk".utf8))
        _ = FileManager.default.createFile(
            atPath: folder + "/0_00000000000000000021-00000000.tmp", contents: Data("half".utf8))
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.filter { $0.contains("quarantine") }.count == 2)
        let quarantined = try FileManager.default.subpathsOfDirectory(atPath: archive.layout.quarantineDirectory)
        #expect(quarantined.contains { $0.hasSuffix("data/stray/0_x_y.jsonl.zst") })
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
