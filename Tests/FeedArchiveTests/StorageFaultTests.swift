import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

/// Disk full, failing fsync, failing rename, at each step of the commit protocol: the run
/// stops with exit 74 naming the file, the checkpoint is never ahead of durable data, and
/// the next run, once the fault is gone, completes with verify clean and nothing lost or doubled.
@Suite struct StorageFaultTests {
    /// Manifest faults fire on the first group's manifest operation (after the epoch line's):
    /// group commit may put a whole run's blobs in one append, so a later one need not exist.
    static let faults: [(String, FaultInjectingFileSystem.Fault)] = [
        ("disk full writing a blob", .init(.write, pathContains: ".tmp", skip: 1)),
        ("fsync of a blob fails", .init(.sync, pathContains: "/_feedarchive/tmp/", errno: EIO, skip: 1)),
        ("rename of a blob fails", .init(.rename, pathContains: "/_feedarchive/tmp/", errno: EACCES, skip: 1)),
        ("fsync of a blob directory fails", .init(.syncDirectory, pathContains: "/hour=", errno: EIO, skip: 1)),
        ("disk full appending the manifest", .init(.write, pathContains: "/manifest/", skip: 1)),
        ("fsync of the manifest fails", .init(.sync, pathContains: "/manifest/", errno: EIO, skip: 1)),
        ("manifest cannot be opened", .init(.openForAppend, pathContains: "/manifest/", errno: EROFS, skip: 1)),
        ("disk full replacing the checkpoint", .init(.write, pathContains: "checkpoint.json", skip: 1)),
        ("rename of the checkpoint fails", .init(.rename, pathContains: "checkpoint.json", errno: EIO, skip: 1)),
        ("blob directory cannot be created", .init(.createDirectory, pathContains: "/hour=12", errno: EACCES)),
        ("read-only archive", .init(.create, pathContains: "", errno: EROFS, skip: 2, sticky: true)),
    ]

    @Test(arguments: faults.indices)
    func faultStopsTheRunAndTheNextRunCompletes(_ index: Int) async throws {
        let (name, fault) = Self.faults[index]
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 5)
        let source = InMemorySource()
        for step in 0..<30 { source.append(timestamp: baseTime + Int64(step) * 300_000_000) }
        let fs = FaultInjectingFileSystem([fault])
        await #expect("\(name)") {
            try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        } throws: { error in
            guard let error = error as? FeedArchiveError, error.exitCode == 74 else { return false }
            return "\(error)".contains(dir.path)  // names the file
        }
        #expect(!fs.firedFaults.isEmpty, "\(name): the fault never fired")

        // Nothing claimed beyond what is durable: every manifest blob is intact, the checkpoint
        // is not ahead of the manifest.
        let report = try Verifier(job: job).verify(deep: true)
        #expect(
            !report.problems.contains {
                ["missing", "hash", "size", "decode", "records", "gap", "chain"].contains($0.kind)
            }, "\(name): \(report.problems)")
        #expect(!report.problems.contains { $0.kind == "checkpoint" && $0.message.contains("ahead") }, "\(name)")

        fs.heal()
        _ = try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        let positions = try archivedLines(job).map(position(of:))
        #expect(
            positions == source.changes().map { InMemorySource.position(group: $0.group, index: $0.index).rawValue },
            "\(name)")
        let after = try Verifier(job: job).verify(deep: true)
        #expect(after.isClean, "\(name): \(after.problems)")
    }

    /// The blob's directory is deleted (for real) between writing the blob and renaming it.
    @Test func blobDirectoryDeletedUnderARunningJob() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir, maxRecords: 5)
        let source = InMemorySource()
        for index in 0..<30 { source.append(timestamp: baseTime + Int64(index / 5) * hour) }  // one hour folder per blob
        let deleted = Mutex(0)
        let data = dir.path + "/lake/mem/data"
        let fs = FaultInjectingFileSystem { operation, path in
            guard operation == .sync, path.hasSuffix(".tmp"), path.contains("/_feedarchive/tmp/") else { return }
            if deleted.withLock({
                $0 += 1
                return $0
            }) == 3 {
                // The folders of blobs not yet renamed into place are the empty ones.
                let files = FileManager.default
                for date in (try? files.contentsOfDirectory(atPath: data)) ?? [] {
                    for hour in (try? files.contentsOfDirectory(atPath: data + "/" + date)) ?? []
                    where (try? files.contentsOfDirectory(atPath: data + "/" + date + "/" + hour))?.isEmpty == true {
                        try? files.removeItem(atPath: data + "/" + date + "/" + hour)
                    }
                }
            }
        }
        await #expect {
            try await ArchiveRunner(job: job, source: source, fs: fs).run(RunOptions())
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 74 && "\(error)".contains(".tmp")
                && "\(error)".contains("No such file")
        }
        let checkpoint = try #require(try JobArchive(job: job).checkpointAfterLoad())
        #expect(checkpoint.manifestSeq <= 3)  // the epoch and at most the two blobs before the deletion
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(try archivedLines(job).count == 30)
        #expect(try Verifier(job: job).verify(deep: true).isClean)
    }
}

extension JobArchive {
    func checkpointAfterLoad() throws -> Checkpoint? {
        _ = try load()
        return checkpoint
    }
}
