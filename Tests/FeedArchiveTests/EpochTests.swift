import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@Suite struct EpochTests {
    @Test func recordsTheNewSourceAndStartsALineageWithoutTouchingTheArchive() async throws {
        let dir = TempDirectory()
        let (job, _, before) = try await archivedMemoryFeed(in: dir, changes: 12)
        let recorded = try #require(before.identity)
        let restored = InMemorySource(name: "restored-feed")
        for _ in 0..<4 { restored.append() }

        let token = try await Epoch.start(
            job: job, from: .beginning, reason: "restored from backup", source: .source(restored))

        let restoredIdentity = try await restored.identity()
        #expect(token.cursors == ["0": "0"])
        #expect(token.source == restoredIdentity.shortFingerprint)
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let identity = try #require(archive.identity)
        #expect(identity.sourceFingerprint == restoredIdentity.fingerprint)
        #expect(identity.source == ["name": "restored-feed"])
        // The rest of job.json is the archive's, not the new source's.
        #expect(identity.job == recorded.job && identity.originToken == recorded.originToken)
        #expect(identity.createdAt == recorded.createdAt && identity.sourceKind == recorded.sourceKind)
        #expect(Array(archive.manifest.entries.dropLast()) == before.manifest.entries)
        let epoch = try #require(archive.manifest.entries.last)
        #expect(epoch.kind == .epoch && epoch.lineage == "live")
        #expect(epoch.toToken == token.encoded && epoch.reason == "restored from backup")
        #expect(archive.checkpoint?.token == token.encoded)

        // The next run reads the new source from the epoch on.
        let run = try await ArchiveRunner(job: job, source: restored).run(RunOptions())
        #expect(run.records == 4)
        #expect(try archivedLines(job).count == 16)
    }

    @Test func anArchiveWithoutIdentityGetsOneThatStartsAtTheEpoch() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let source = InMemorySource()
        for _ in 0..<7 { source.append() }

        let token = try await Epoch.start(job: job, from: .now, reason: "start here", source: .source(source))

        let sourceIdentity = try await source.identity()
        #expect(token.cursors == ["0": "7"])
        let archive = JobArchive(job: job)
        _ = try archive.load()
        let identity = try #require(archive.identity)
        #expect(identity.job == "mem" && identity.sourceKind == "memory")
        #expect(identity.originToken == token.encoded)
        #expect(identity.sourceFingerprint == sourceIdentity.fingerprint)
        #expect(archive.checkpoint?.token == token.encoded)
        let run = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        #expect(run.records == 0)
    }

    /// The lock and recovery come before the source: a locked job is exit 75 even when its
    /// source cannot be made (here: a registry that knows no source kind, exit 78).
    @Test func aLockedJobIsRefusedBeforeTheSourceIsOpened() async throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let lock = try JobArchive(job: job).openForWriting()
        await #expect {
            _ = try await Epoch.start(job: job, from: .beginning, reason: "r", source: .registry(SourceRegistry([])))
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 75
        }
        lock.release()
        await #expect {
            _ = try await Epoch.start(job: job, from: .beginning, reason: "r", source: .registry(SourceRegistry([])))
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 78 && "\(error)".contains("unknown source kind 'memory'")
        }
    }

    @Test func aStartTheSourceRefusesChangesNothing() async throws {
        let dir = TempDirectory()
        let (job, source, before) = try await archivedMemoryFeed(in: dir, changes: 5)
        let identityBytes = try PosixFileSystem().read(before.layout.identityFile)
        let foreign = ContinuationToken(kind: "sqlite", source: "0123456789abcdef", cursors: ["0": "3"]).encoded
        await #expect {
            _ = try await Epoch.start(job: job, from: .token(foreign), reason: "r", source: .source(source))
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65
        }
        let archive = JobArchive(job: job)
        _ = try archive.load()
        #expect(archive.manifest.entries == before.manifest.entries)
        #expect(archive.checkpoint == before.checkpoint)
        #expect(try PosixFileSystem().read(before.layout.identityFile) == identityBytes)
    }
}
