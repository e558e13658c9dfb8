import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

/// A run records its end (last_run.json) while it still holds the job lock: a run that starts
/// right after must not find the record half-written and take it for a stray.
@Suite struct RunEndRecordTests {
    final class Quiet: RunSessionObserver {
        func willRun(_ job: JobConfig, options: inout RunOptions) {}
        func failed(job: String?, error: any Error) {}
        func didRun(_ job: JobConfig, summary: RunSummary?) {}
    }

    @Test(arguments: [false, true])
    func lastRunIsWrittenUnderTheJobLock(failing: Bool) async throws {
        let dir = TempDirectory("run-end")
        let file = dir.write(
            "mem.yaml",
            "name: mem\nsource:\n  kind: memory\narchive:\n  root: \(dir.path)/lake\nbatch:\n  max_records: 5\n")
        let source = InMemorySource()
        for _ in 0..<7 { source.append() }
        let lockPath = dir.path + "/lake/mem/_feedarchive/lock"
        // When last_run.json's temp file is created, try to take the lock as another run would.
        let lockedWhileRecording = Mutex<[Bool]>([])
        let fs = FaultInjectingFileSystem(
            failing ? [.init(.create, pathContains: "/_feedarchive/tmp/", errno: ENOSPC, sticky: true)] : [],
            beforeOperation: { operation, path in
                guard operation == .create, path.hasSuffix("last_run.json.tmp") else { return }
                let held: Bool
                do {
                    let lock = try JobLock(path: lockPath, mode: 0o640)
                    lock.release()
                    held = false
                } catch {
                    held = true
                }
                lockedWhileRecording.withLock { $0.append(held) }
            })
        let code = await RunSession(jobFiles: [file], options: RunOptions(), source: .source(source), fs: fs).run(
            observer: Quiet())
        #expect(code == (failing ? 74 : 0))
        #expect(lockedWhileRecording.withLock { $0 } == [true])
        let record = try #require(
            RunRecord.load(ArchiveLayout(root: dir.path + "/lake", job: "mem"), fs: PosixFileSystem()))
        #expect(record.lastExitCode == (failing ? 74 : 0))
    }
}
