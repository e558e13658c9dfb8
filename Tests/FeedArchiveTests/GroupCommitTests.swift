import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

/// Small blobs that close while a commit runs are committed together: one journal commit for
/// their fsyncs, one fsync per folder, one manifest write. Each blob must still go through the
/// protocol's steps in order, a failure inside a group must commit nothing after it, and a run
/// killed between a group's renames and its lines must leave recovery every blob it placed.
@Suite struct GroupCommitTests {
    /// A job of one-change blobs, one hour folder each, whose manifest fsyncs are slow (20 ms):
    /// the batches read meanwhile pile up and are committed as groups.
    static func pilingUp(
        _ dir: TempDirectory, blobs: Int, faults: [FaultInjectingFileSystem.Fault] = [],
        log: OperationLog? = nil
    ) throws -> (JobConfig, InMemorySource, FaultInjectingFileSystem) {
        let job = try memoryJob(in: dir, maxRecords: 1)
        let source = InMemorySource()
        for index in 0..<blobs { source.append(timestamp: baseTime + Int64(index) * hour) }
        let fs = FaultInjectingFileSystem(faults) { operation, path in
            log?.entries.withLock { $0.append((operation.rawValue, path)) }
            if operation == .sync, path.contains("/manifest/") { Thread.sleep(forTimeInterval: 0.02) }
        }
        return (job, source, fs)
    }

    @Test func everyBlobOfAGroupIsDurableRenamedAndInADurableFolderBeforeItsLine() async throws {
        let dir = TempDirectory()
        let log = OperationLog()
        let (job, source, fs) = try Self.pilingUp(dir, blobs: 40, log: log)
        _ = try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        let ops = log.entries.withLock { $0 }
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let blobs = archive.manifest.entries.filter { $0.kind == ManifestEntry.Kind.blob }
        #expect(blobs.count == 40)
        let manifestSyncs = ops.indices.filter { ops[$0].0 == "sync" && ops[$0].1.contains("/manifest/") }
        // Grouped: fewer manifest fsyncs than blobs (how many fewer depends on the machine's load).
        #expect(manifestSyncs.count < 40, "\(manifestSyncs.count) manifest fsyncs for 40 blobs")
        for blob in blobs {
            let final = archive.layout.absolute(blob.path!)
            let folder = parentDirectory(of: final)
            let name = lastComponent(of: final)
            let stem = String(name[..<name.index(name.startIndex, offsetBy: name.count - ".jsonl.zst".count)])
            // <part>_<first>_<last>: the temp file is <part>_<first>.tmp.
            let temp = "/_feedarchive/tmp/" + stem.split(separator: "_").prefix(2).joined(separator: "_") + ".tmp"
            let synced = try #require(ops.firstIndex { $0.0 == "sync" && $0.1.hasSuffix(temp) }, "\(name)")
            let renamed = try #require(ops.firstIndex { $0.0 == "rename" && $0.1.hasSuffix(temp) }, "\(name)")
            let committed = try #require(manifestSyncs.first { $0 > renamed }, "\(name): no manifest fsync after it")
            let folderSynced = try #require(
                ops.indices.first { $0 > renamed && ops[$0].0 == "syncDirectory" && ops[$0].1 == folder }, "\(name)")
            let parentSynced = try #require(
                ops.indices.first {
                    $0 > renamed && ops[$0].0 == "syncDirectory" && ops[$0].1 == parentDirectory(of: folder)
                }
                    ?? ops.indices.last {
                        $0 < renamed && ops[$0].0 == "syncDirectory" && ops[$0].1 == parentDirectory(of: folder)
                    },
                "\(name): its folder's parent never fsynced")
            #expect(synced < renamed, "\(name): renamed before its fsync")
            #expect(folderSynced < committed, "\(name): its line before its folder's fsync")
            #expect(parentSynced < committed, "\(name): its line before its folder was durable in its parent")
        }
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }

    @Test(arguments: [
        FaultInjectingFileSystem.Fault(.rename, pathContains: "/_feedarchive/tmp/", errno: EIO, skip: 7),
        FaultInjectingFileSystem.Fault(.sync, pathContains: "/_feedarchive/tmp/", errno: EIO, skip: 9),
        FaultInjectingFileSystem.Fault(.syncDirectory, pathContains: "/hour=", errno: EIO, skip: 8),
        FaultInjectingFileSystem.Fault(.write, pathContains: "/manifest/", skip: 1),  // the first group (all 40, on a busy machine)
    ])
    func aFailureInsideAGroupCommitsNothingAfterItAndTheNextRunCompletes(_ fault: FaultInjectingFileSystem.Fault)
        async throws
    {
        let dir = TempDirectory()
        let (job, source, fs) = try Self.pilingUp(dir, blobs: 40, faults: [fault])
        await #expect {
            try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 74
        }
        #expect(!fs.firedFaults.isEmpty)
        // What the manifest names is a gapless prefix of the feed, every blob intact.
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let committed = try archivedLines(job).map(position(of:))
        let expected = source.changes().map { InMemorySource.position(group: $0.group, index: $0.index).rawValue }
        #expect(committed == Array(expected.prefix(committed.count)).map { String($0) })
        #expect(committed.count < 40)
        let report = try Verifier(job: job).verify(deep: true)
        #expect(
            !report.problems.contains {
                ["missing", "hash", "size", "decode", "records", "gap", "chain"].contains($0.kind)
            },
            "\(report.problems)")

        fs.heal()
        _ = try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        #expect(try archivedLines(job).map(position(of:)) == expected.map { String($0) })
        let after = try Verifier(job: job).verify(deep: true)
        #expect(after.isClean, "\(after.problems)")
    }

    /// A group whose lines would cross into a new manifest segment, with the new segment's
    /// write failing: the lines already in the old segment must not be half of a failed group
    /// (the checkpoint then named the tail with an older token, and the next run archived
    /// those changes again).
    @Test func aGroupAcrossASegmentBoundaryFailsOrCommitsWhole() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 1)
        let source = InMemorySource()
        let first = Int(Manifest.segmentLines) - 30  // the epoch line, then one line per change
        for _ in 0..<first { source.append(timestamp: baseTime) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        for _ in 0..<40 { source.append(timestamp: baseTime) }
        // Groups of about ten (a blob read every 2 ms, a commit of 20 ms): the boundary falls in
        // the fourth, after a group whose checkpoint was deferred.
        let fs = FaultInjectingFileSystem([.init(.write, pathContains: "/manifest/00000002.jsonl")]) {
            operation, path in
            if operation == .sync, path.contains("/manifest/") { Thread.sleep(forTimeInterval: 0.02) }
            if operation == .create, path.hasSuffix(".tmp") { Thread.sleep(forTimeInterval: 0.002) }
        }
        await #expect {
            try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 74
        }
        #expect(!fs.firedFaults.isEmpty)
        fs.heal()
        _ = try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        let expected = source.changes().map { InMemorySource.position(group: $0.group, index: $0.index).rawValue }
        #expect(try archivedLines(job).map(position(of:)) == expected)
        let report = try Verifier(job: job).verify(deep: true, full: true)
        #expect(report.isClean, "\(report.problems.map(\.message))")
        #expect(report.records == Int64(first + 40))
    }

    /// kill -9 between a group's renames and its manifest write: `_feedarchive/placing` names
    /// every blob of the group; recovery quarantines those no line names and keeps the others.
    @Test func recoveryQuarantinesEveryBlobAKilledGroupPlaced() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir, changes: 10)
        let committed = try #require(archive.manifest.entries.last(where: { $0.kind == .blob }))
        let folder = archive.layout.dataDirectory + "/date=2030-01-01/hour=00"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var placing = "\(committed.seq) \(committed.path!)\n"
        for index in 0..<3 {
            let path = "data/date=2030-01-01/hour=00/0_9\(index)_9\(index).jsonl.zst"
            _ = FileManager.default.createFile(atPath: archive.layout.absolute(path), contents: Data("half".utf8))
            placing += "\(archive.manifest.tailSeq + 1 + Int64(index)) \(path)\n"
        }
        try Data(placing.utf8).write(to: URL(fileURLWithPath: archive.layout.placingFile))
        let summary = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(summary.recovery.filter { $0.contains("quarantine") }.count == 3, "\(summary.recovery)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
        #expect(FileManager.default.fileExists(atPath: archive.layout.absolute(committed.path!)))
        #expect(!FileManager.default.fileExists(atPath: archive.layout.placingFile))
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }
}

/// The file operations of a run, in order.
final class OperationLog: Sendable {
    let entries = Mutex<[(String, String)]>([])
}
