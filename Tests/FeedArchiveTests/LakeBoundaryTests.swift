import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// A job stays inside its own archive: it never moves another job's files, never follows a
/// symbolic link inside its archive, and never overwrites what an earlier recovery set aside.
@Suite struct LakeBoundaryTests {
    func job(_ dir: TempDirectory, name: String, root: String) throws -> JobConfig {
        try JobConfig.parse(
            yaml:
                "name: \(name)\nsource: {kind: memory}\narchive: {root: \(root)}\nbatch: {max_records: 5, page_size: 4}\n",
            file: dir.path + "/\(name).yaml")
    }

    @Test func aRootInsideAnotherJobsArchiveIsRefusedAndNothingMoves() async throws {
        let dir = TempDirectory("lake-nested")
        let a = try job(dir, name: "a", root: "lake")
        let sourceA = InMemorySource()
        for _ in 0..<7 { sourceA.append() }
        _ = try await ArchiveRunner(job: a, source: sourceA).run(RunOptions())

        // b's archive would be lake/a/data/b: inside a's archive, where a's recovery looks.
        let b = try job(dir, name: "b", root: "lake/a/data")
        let sourceB = InMemorySource()
        sourceB.append()
        let error = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: b, source: sourceB).run(RunOptions())
        }
        #expect(error?.exitCode == 78)
        #expect("\(error.map { "\($0)" } ?? "")".contains("inside the archive of job a"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/lake/a/data/b"))

        // An archive that is already there (made by an older version): a's runs never touch a
        // file no line of theirs names, so nothing moves; a's verify refuses to walk into it.
        try FileManager.default.createDirectory(
            atPath: dir.path + "/lake/a/data/b/_feedarchive", withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: dir.path + "/lake/a/data/b/_feedarchive/job.json"))
        sourceA.append()
        #expect(try await ArchiveRunner(job: a, source: sourceA).run(RunOptions()).records == 1)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/lake/a/data/b/_feedarchive/job.json"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/lake/a/_feedarchive/quarantine"))
        let refused = #expect(throws: FeedArchiveError.self) { _ = try Verifier(job: a).verify(deep: false) }
        #expect(refused?.exitCode == 78)
        #expect("\(refused.map { "\($0)" } ?? "")".contains("data/b"))
    }

    @Test func aSymlinkInsideTheArchiveIsNeverFollowed() async throws {
        let dir = TempDirectory("lake-symlink")
        let a = try job(dir, name: "a", root: "lake")
        let source = InMemorySource()
        for _ in 0..<3 { source.append() }
        _ = try await ArchiveRunner(job: a, source: source).run(RunOptions())
        let outside = dir.path + "/precious"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: outside + "/file.txt"))
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/lake/a/data/link", withDestinationPath: outside)

        // A run never walks data/, so the link is not followed; verify refuses it.
        source.append()
        #expect(try await ArchiveRunner(job: a, source: source).run(RunOptions()).records == 1)
        #expect(FileManager.default.fileExists(atPath: outside + "/file.txt"))
        let error = #expect(throws: FeedArchiveError.self) { _ = try Verifier(job: a).verify(deep: false) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("symbolic link"))
        try FileManager.default.removeItem(atPath: dir.path + "/lake/a/data/link")

        // A folder blobs go into that is a link: refused before anything is written there.
        let dateFolder = dir.path + "/lake/a/data"
        try FileManager.default.moveItem(atPath: dateFolder, toPath: outside + "/moved")
        try FileManager.default.createSymbolicLink(atPath: dateFolder, withDestinationPath: outside + "/moved")
        source.append()
        let linked = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: a, source: source).run(RunOptions())
        }
        #expect(linked?.exitCode == 65)
        #expect("\(linked.map { "\($0)" } ?? "")".contains("symbolic link"))
        try FileManager.default.removeItem(atPath: dateFolder)
        try FileManager.default.moveItem(atPath: outside + "/moved", toPath: dateFolder)

        // The lock file as a symlink: refused, and the file it points to is not truncated.
        let lock = dir.path + "/lake/a/_feedarchive/lock"
        try FileManager.default.removeItem(atPath: lock)
        try FileManager.default.createSymbolicLink(atPath: lock, withDestinationPath: outside + "/file.txt")
        let lockError = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: a, source: source).run(RunOptions())
        }
        #expect("\(lockError.map { "\($0)" } ?? "")".contains("symbolic link"))
        #expect(try String(contentsOfFile: outside + "/file.txt", encoding: .utf8) == "keep me")
        try FileManager.default.removeItem(atPath: lock)
        let summary = try await ArchiveRunner(job: a, source: source).run(RunOptions())
        #expect(summary.records == 1)
        #expect(try Verifier(job: a).verify(deep: true).isClean)
    }

    @Test func quarantineFoldersNeverOverwriteAnEarlierOne() async throws {
        let dir = TempDirectory("lake-quarantine")
        let a = try job(dir, name: "a", root: "lake")
        let source = InMemorySource()
        source.append()
        _ = try await ArchiveRunner(job: a, source: source).run(RunOptions())
        let temp = dir.path + "/lake/a/_feedarchive/tmp"
        var folders: Set<String> = []
        for round in 0..<3 {
            try Data("stray \(round)".utf8).write(to: URL(fileURLWithPath: temp + "/0_000.tmp"))
            // Recoveries in the same second by the same process: the run id repeats.
            let archive = JobArchive(job: a)
            let lock = try archive.openForWriting()
            let report = try archive.recover()
            lock.release()
            #expect(report.quarantined == ["_feedarchive/tmp/0_000.tmp"])
            folders = Set(
                try FileManager.default.contentsOfDirectory(atPath: dir.path + "/lake/a/_feedarchive/quarantine"))
        }
        #expect(folders.count == 3)
        var kept: [String] = []
        for folder in folders {
            kept.append(
                try String(
                    contentsOfFile: dir.path + "/lake/a/_feedarchive/quarantine/\(folder)/_feedarchive/tmp/0_000.tmp",
                    encoding: .utf8))
        }
        #expect(kept.sorted() == ["stray 0", "stray 1", "stray 2"])
    }

    @Test func aJobNamedDataInsideAnotherJobIsRefusedEitherWay() async throws {
        let dir = TempDirectory("lake-data-name")
        // The job named data runs first: its archive is lake/a/data, where job a keeps its blobs.
        let inner = try job(dir, name: "data", root: "lake/a")
        let innerSource = InMemorySource()
        for _ in 0..<3 { innerSource.append() }
        _ = try await ArchiveRunner(job: inner, source: innerSource).run(RunOptions())

        let a = try job(dir, name: "a", root: "lake")
        let sourceA = InMemorySource()
        sourceA.append()
        let error = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: a, source: sourceA).run(RunOptions())
        }
        #expect(error?.exitCode == 78)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/lake/a/data/_feedarchive/job.json"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/lake/a/_feedarchive/quarantine"))
    }

    @Test func aRootSpelledThroughDotDotIsStillSeenInsideAnotherArchive() async throws {
        let dir = TempDirectory("lake-dotdot")
        let a = try job(dir, name: "a", root: "lake")
        let sourceA = InMemorySource()
        sourceA.append()
        _ = try await ArchiveRunner(job: a, source: sourceA).run(RunOptions())
        let b = try job(dir, name: "b", root: "nx/../lake/a/data")
        let sourceB = InMemorySource()
        sourceB.append()
        let error = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: b, source: sourceB).run(RunOptions())
        }
        #expect(error?.exitCode == 78)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/lake/a/data/b"))
    }

    @Test func aSymlinkedJobFolderAndAnotherJobsJobJsonAreRefused() async throws {
        let dir = TempDirectory("lake-meta-link")
        let a = try job(dir, name: "a", root: "lake")
        let source = InMemorySource()
        source.append()
        _ = try await ArchiveRunner(job: a, source: source).run(RunOptions())

        // Another job's archive copied under this job's name.
        try FileManager.default.copyItem(atPath: dir.path + "/lake/a", toPath: dir.path + "/lake/c")
        let c = try job(dir, name: "c", root: "lake")
        let copied = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: c, source: source).run(RunOptions())
        }
        #expect(copied?.exitCode == 78)
        #expect("\(copied.map { "\($0)" } ?? "")".contains("belongs to job 'a'"))

        // The job's own folder replaced by a link to another one.
        try FileManager.default.createDirectory(atPath: dir.path + "/lake/d", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: dir.path + "/lake/d/_feedarchive", withDestinationPath: dir.path + "/lake/a/_feedarchive")
        let d = try job(dir, name: "d", root: "lake")
        let linked = await #expect(throws: FeedArchiveError.self) {
            _ = try await ArchiveRunner(job: d, source: source).run(RunOptions())
        }
        #expect(linked?.exitCode == 65)
    }
}
