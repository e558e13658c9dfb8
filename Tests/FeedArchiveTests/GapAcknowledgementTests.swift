import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@Suite struct GapAcknowledgementTests {
    @Test func recordsTheGapWithItsReasonAndKeepsTheCheckpoint() async throws {
        let dir = TempDirectory()
        let (job, source, before) = try await archivedMemoryFeed(in: dir, changes: 10)
        let fingerprint = try await source.identity().shortFingerprint
        let from = ContinuationToken(kind: "memory", source: fingerprint, cursors: ["0": "3"])
        let until = ContinuationToken(kind: "memory", source: fingerprint, cursors: ["0": "6"])

        try GapAcknowledgement.record(job: job, from: from, until: until, reason: "pruned, INC-1")

        let archive = JobArchive(job: job)
        _ = try archive.load()
        #expect(archive.manifest.entries.count == before.manifest.entries.count + 1)
        let line = try #require(archive.manifest.entries.last)
        #expect(line.kind == .gapAck && line.lineage == "gap-ack" && line.part == "0")
        #expect(line.fromToken == from.encoded && line.toToken == until.encoded && line.reason == "pruned, INC-1")
        #expect(archive.checkpoint?.token == before.checkpoint?.token)
        #expect(archive.checkpoint?.manifestSeq == line.seq)
    }

    @Test func tokensOfTwoSourcesOrOfAnotherArchiveAreRefused() async throws {
        let dir = TempDirectory()
        let (job, source, before) = try await archivedMemoryFeed(in: dir, changes: 4)
        let fingerprint = try await source.identity().shortFingerprint
        let ours = ContinuationToken(kind: "memory", source: fingerprint, cursors: ["0": "1"])
        let other = ContinuationToken(kind: "memory", source: "0123456789abcdef", cursors: ["0": "2"])
        let otherEnd = ContinuationToken(kind: "memory", source: "0123456789abcdef", cursors: ["0": "3"])
        #expect {
            try GapAcknowledgement.record(job: job, from: ours, until: other, reason: "r")
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 64 && "\(error)".contains("tokens of different sources")
        }
        #expect {
            try GapAcknowledgement.record(job: job, from: other, until: otherEnd, reason: "r")
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 65 && "\(error)".contains("another source than this archive's")
        }
        let archive = JobArchive(job: job)
        _ = try archive.load()
        #expect(archive.manifest.entries == before.manifest.entries)
    }

    @Test func aJobWithoutArchiveHasNoGapToAcknowledge() throws {
        let dir = TempDirectory()
        let job = try memoryJob(in: dir)
        let from = ContinuationToken(kind: "memory", source: "0123456789abcdef", cursors: ["0": "1"])
        let until = ContinuationToken(kind: "memory", source: "0123456789abcdef", cursors: ["0": "2"])
        #expect {
            try GapAcknowledgement.record(job: job, from: from, until: until, reason: "r")
        } throws: { error in
            (error as? FeedArchiveError)?.exitCode == 64 && "\(error)".contains("no archive yet")
        }
    }
}
