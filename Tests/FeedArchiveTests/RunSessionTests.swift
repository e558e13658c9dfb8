import FeedArchive
import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

@Suite struct RunSessionTests {
    /// Records what the session tells its observer, and can raise a signal on a job's commits.
    final class Events: RunSessionObserver {
        var lines: [String] = []
        var raiseOnCommit: (job: String, stop: StopSignal)?

        func willRun(_ job: JobConfig, options: inout RunOptions) {
            lines.append("start \(job.name)")
            if let raise = raiseOnCommit, raise.job == job.name {
                let stop = raise.stop
                options.onCommit = { _ in stop.raise(SIGTERM) }
            }
        }
        func failed(job: String?, error: any Error) {
            lines.append("failed \(job ?? "-") \(FeedArchiveError.exitCode(for: error))")
        }
        func didRun(_ job: JobConfig, summary: RunSummary?) {
            lines.append("end \(job.name) \(summary.map { "\($0.records) changes" } ?? "failed")")
        }
    }

    /// A job file over the in-memory source, archived under `dir/lake`.
    func jobFile(_ name: String, in dir: TempDirectory) -> String {
        dir.write(
            name + ".yaml",
            """
            name: \(name)
            source:
              kind: memory
            archive:
              root: \(dir.path)/lake
            batch:
              max_records: 5
              page_size: 4

            """)
    }

    func feed(_ changes: Int) -> InMemorySource {
        let source = InMemorySource()
        for _ in 0..<changes { source.append() }
        return source
    }

    func lastRun(_ name: String, in dir: TempDirectory) -> RunRecord? {
        RunRecord.load(ArchiveLayout(root: dir.path + "/lake", job: name))
    }

    @Test func runsEveryJobAndRecordsEachOne() async throws {
        let dir = TempDirectory()
        let files = [jobFile("a", in: dir), jobFile("b", in: dir)]
        let metrics = dir.path + "/feedarchive.prom"
        let events = Events()
        let code = await RunSession(
            jobFiles: files, options: RunOptions(), source: .source(feed(12)), metricsFile: metrics
        ).run(observer: events)
        #expect(code == 0)
        #expect(events.lines == ["start a", "end a 12 changes", "start b", "end b 12 changes"])
        #expect(lastRun("a", in: dir)?.lastExitCode == 0 && lastRun("a", in: dir)?.lastRecords == 12)
        #expect(lastRun("b", in: dir)?.lastExitCode == 0)
        let text = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(
            text.contains(#"feedarchive_records{job="a"} 12"#) && text.contains(#"feedarchive_records{job="b"} 12"#))
    }

    @Test func aJobFileThatCannotBeReadFailsOnlyThatJob() async throws {
        let dir = TempDirectory()
        let missing = dir.path + "/missing.yaml"
        let events = Events()
        let code = await RunSession(
            jobFiles: [missing, jobFile("a", in: dir)], options: RunOptions(), source: .source(feed(3))
        ).run(observer: events)
        #expect(code == 78)
        #expect(events.lines == ["failed \(missing) 78", "start a", "end a 3 changes"])
        #expect(lastRun("a", in: dir)?.lastExitCode == 0)
    }

    @Test func aSignalBeforeAJobReportsItAndEveryLaterOneAsNotRun() async throws {
        let dir = TempDirectory()
        let files = [jobFile("a", in: dir), jobFile("b", in: dir)]
        let options = RunOptions()
        options.stop.raise(SIGINT)
        let events = Events()
        let code = await RunSession(jobFiles: files, options: options, source: .source(feed(3))).run(observer: events)
        #expect(code == 130)
        #expect(events.lines == ["failed \(files[0]) 130", "failed \(files[1]) 130"])
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/lake"))
    }

    /// Whoever reads the exit code must learn that the session was interrupted, whatever failed before.
    @Test func anInterruptionOutranksAnEarlierFailure() async throws {
        let dir = TempDirectory()
        let files = [dir.path + "/missing.yaml", jobFile("a", in: dir), jobFile("b", in: dir)]
        let options = RunOptions()
        let events = Events()
        events.raiseOnCommit = ("a", options.stop)
        let code = await RunSession(jobFiles: files, options: options, source: .source(feed(12))).run(observer: events)
        #expect(code == 143)
        #expect(
            events.lines == [
                "failed \(files[0]) 78", "start a", "failed a 143", "end a failed", "failed \(files[2]) 143",
            ])
        #expect(lastRun("a", in: dir)?.lastExitCode == 143)
        #expect(lastRun("b", in: dir) == nil)
    }

    /// last_run.json belongs to the run that holds the lock: a run refused by it records nothing.
    @Test func aLockedJobLeavesItsRecordToTheLockHolder() async throws {
        let dir = TempDirectory()
        let file = jobFile("a", in: dir)
        let lock = try JobArchive(job: try JobConfig.load(path: file)).openForWriting()
        defer { lock.release() }
        let metrics = dir.path + "/feedarchive.prom"
        let events = Events()
        let code = await RunSession(
            jobFiles: [file], options: RunOptions(), source: .source(feed(3)), metricsFile: metrics
        ).run(observer: events)
        #expect(code == 75)
        #expect(events.lines == ["start a", "failed a 75", "end a failed"])
        #expect(lastRun("a", in: dir) == nil)
        #expect(!(try String(contentsOfFile: metrics, encoding: .utf8)).contains(#"job="a""#))
    }

    @Test func aMetricsFileThatCannotBeWrittenIsExit74() async throws {
        let dir = TempDirectory()
        let events = Events()
        let session = RunSession(
            jobFiles: [jobFile("a", in: dir)], options: RunOptions(), source: .source(feed(3)),
            metricsFile: dir.path + "/no/such/folder/x.prom")
        #expect(await session.run(observer: events) == 74)
        #expect(events.lines == ["start a", "end a 3 changes", "failed - 74"])
    }
}
