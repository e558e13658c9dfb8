import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@Suite struct VerificationTests {
    @Test func comparesWithTheSourceOnlyWhenGivenOne() async throws {
        let dir = TempDirectory()
        let (job, source, archive) = try await archivedMemoryFeed(in: dir, changes: 20, maxRecords: 5)
        let blobs = ArchiveTotals(archive.manifest).blobs
        let alone = try await Verifier(job: job).verify(deep: true, against: nil)
        #expect(alone.isClean && !alone.notes.contains { $0.hasPrefix("against the source") })
        let compared = try await Verifier(job: job).verify(deep: true, against: .source(source))
        #expect(compared.isClean, "\(compared.problems)")
        #expect(compared.notes.contains("against the source: \(blobs) blobs compared"))

        source.truncate(keeping: 12)
        let truncated = try await Verifier(job: job).verify(deep: false, against: .source(source))
        #expect(truncated.problems.contains { $0.kind == "source" })
    }

    @Test func theJSONReportSaysWhetherItIsClean() async throws {
        let dir = TempDirectory()
        let (job, _, archive) = try await archivedMemoryFeed(in: dir, changes: 10)
        let clean = try await Verifier(job: job).verify(deep: false, against: nil)
        let cleanObject = try #require(
            try JSONSerialization.jsonObject(with: Data(clean.json().utf8)) as? [String: Any])
        #expect(cleanObject["clean"] as? Bool == true && cleanObject["job"] as? String == "mem")
        #expect(cleanObject["records"] as? Int == 10)

        let blob = try #require(archive.manifest.entries.first { $0.kind == .blob }?.path)
        try FileManager.default.removeItem(atPath: archive.layout.absolute(blob))
        let broken = try await Verifier(job: job).verify(deep: false, against: nil)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(broken.json().utf8)) as? [String: Any])
        #expect(object["clean"] as? Bool == false)
        #expect((object["problems"] as? [[String: Any]])?.isEmpty == false)
    }
}
