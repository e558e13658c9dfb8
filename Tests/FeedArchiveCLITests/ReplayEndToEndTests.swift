import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// `feedarchive replay` into SQLite: the replica equals the state the source's changes describe
/// (upserts, deletes, a truncate), up to now or to a point in time, and a replay killed at any
/// point resumes to exactly that state.
@Suite struct ReplayEndToEndTests {
    static func python(_ arguments: [String]) async throws -> (Int32, String) {
        let dir = TempDirectory()
        let out = dir.path + "/out"
        let pid = try spawn(
            "python3", [Binary.packageRoot + "/scripts/replay_check.py"] + arguments, stdout: out, stderr: out)
        let status = await reapAsync(pid)
        return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    @Test func theReplicaHoldsTheSourcesStateNowAndAtAPointInTime() async throws {
        let dir = TempDirectory()
        let db = dir.path + "/entities.db"
        #expect(try await Self.python(["make", db, "3000"]).0 == 0)
        dir.write(
            "entities.yaml",
            """
            name: entities
            source:
              kind: sqlite
              path: entities.db
              table: outbox
              sequence_column: seq
              document_column: doc
              key_column: entity
              op_column: op
              timestamp_column: at
            archive:
              root: lake
            batch:
              max_records: 97

            """)
        dir.write(
            "replica.yaml",
            """
            name: replica
            archive_job: entities.yaml
            target:
              kind: sqlite
              path: replica.db
              table: entities

            """)
        let run = try await Binary.run(["run", dir.path + "/entities.yaml"])
        #expect(run.status == 0, "\(run.stderr)")
        let replay = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(replay.status == 0 && replay.stderr.contains("replayed 3000 changes"), "\(replay.stderr)")
        let now = try await Self.python(["check", db, dir.path + "/replica.db"])
        #expect(now.0 == 0, "\(now.1)")
        // Again: nothing more to apply, the same state.
        let again = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(again.stderr.contains("replayed 0 changes"), "\(again.stderr)")

        // Points in time, before and after the truncate.
        for cutoff in ["2026-11-18T11:10:00Z", "2026-11-18T11:30:00Z", "2026-11-18T11:40:07Z"] {
            let back = try await Binary.run(["replay", dir.path + "/replica.yaml", "--until", cutoff, "--from-scratch"])
            #expect(back.status == 0, "\(back.stderr)")
            let state = try await Self.python(["check", db, dir.path + "/replica.db", cutoff])
            #expect(state.0 == 0, "\(cutoff): \(state.1)")
        }

        // Killed at any point, then finished: exactly the state, nothing applied twice.
        _ = try await Binary.run([
            "replay", dir.path + "/replica.yaml", "--until", "2026-11-18T11:00:01Z", "--from-scratch",
        ])
        for delay in stride(from: 0, to: 60_000, by: 6_000) {
            let child = try Binary.start(["replay", dir.path + "/replica.yaml"])
            usleep(UInt32(delay))
            child.signal(SIGKILL)
            _ = await child.finish()
        }
        let finished = try await Binary.run(["replay", dir.path + "/replica.yaml"])
        #expect(finished.status == 0, "\(finished.stderr)")
        let exact = try await Self.python(["check", db, dir.path + "/replica.db"])
        #expect(exact.0 == 0, "\(exact.1)")
    }
}
