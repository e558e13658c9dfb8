import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// The built binary against the Cosmos DB test server, run as cron would: feed ranges split and
/// merge in the middle of the feed, the service throttles, and runs die by kill -9 at random
/// moments. The archive must equal the server's change history and verify must be clean.
@Suite(.serialized) struct CosmosEndToEndTests {
    final class CosmosJob {
        let dir = TempDirectory("feedarchive-cosmos-e2e")
        var job: String { dir.path + "/orders.yaml" }

        init(
            server: CosmosTestServer, mode: String, start: String, maxItemCount: Int = 20, maxRecords: Int = 30,
            timeout: String = "5s"
        ) {
            dir.write("account.key", CosmosTestServer.key + "\n")
            dir.write(
                "orders.yaml",
                """
                name: orders
                source:
                  kind: cosmos
                  endpoint: \(server.endpoint)
                  key_file: account.key
                  database: \(CosmosTestServer.database)
                  container: \(CosmosTestServer.container)
                  mode: \(mode)
                  max_item_count: \(maxItemCount)
                  timeout: \(timeout)
                  throttle_retries: 4
                archive:
                  root: lake
                batch:
                  max_records: \(maxRecords)
                start: \(start)

                """)
        }

        /// `id@_lsn:operation` of every archived change, read back with `feedarchive cat`.
        func archived() async throws -> [String] {
            let result = try await Binary.run(["cat", job])
            guard result.status == 0 else { throw TestFailure("cat failed: \(result.stderr)") }
            return try result.stdout.split(separator: "\n").map { line in
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                let key = object["key"] as! [String: Any]
                let source = object["source"] as! [String: Any]
                return "\(key["id"]!)@\(source["_lsn"]!):\(source["operationType"] ?? "w")"
            }
        }
    }

    /// Merges the first two adjacent live ranges.
    func mergeTwo(_ server: CosmosTestServer) throws {
        let live = ((try server.control(["action": "ranges"])["live"] as? [[String: Any]]) ?? [])
            .sorted { ($0["minInclusive"] as! String) < ($1["minInclusive"] as! String) }
        guard live.count >= 2 else { return }
        try server.control(["action": "merge", "ranges": [live[0]["id"]!, live[1]["id"]!]])
    }

    @Test func killNineSplitsMergesAndStormsLoseNothing() async throws {
        let server = try CosmosTestServer(ranges: 4)
        let job = CosmosJob(server: server, mode: "all_versions_and_deletes", start: "now")
        try server.control(["action": "generate", "count": 50, "seed": 100])  // before the origin: not archived
        let first = try await Binary.run(["run", job.job])
        #expect(first.status == 0, "\(first.stderr)")
        let origin = try #require(try server.control(["action": "stats"])["lsn"] as? Int)

        var generator = SystemRandomNumberGenerator()
        var killed = 0
        var runs = 0
        var splits = 0
        var merges = 0
        while (killed < 32 || runs < 45) && runs < 300 {
            runs += 1
            try server.control([
                "action": "generate", "count": Int.random(in: 5...60, using: &generator),
                "transaction": Int.random(in: 1...3, using: &generator),
                "updates": 0.3, "deletes": 0.1, "seed": runs,
            ])
            if runs % 7 == 3, let victim = try server.liveRanges().randomElement(using: &generator) {
                try server.control(["action": "split", "range": victim, "completing": runs % 2])
                splits += 1
            }
            if runs % 11 == 5 {
                try mergeTwo(server)
                merges += 1
            }
            if runs % 5 == 0 {
                try server.control([
                    "action": "storm", "status": 429, "count": Int.random(in: 2...8, using: &generator),
                    "retry_after_ms": 15,
                ])
            }
            if runs % 13 == 0 { try server.control(["action": "storm", "status": 503, "count": 2]) }
            let run = try Binary.start(["run", job.job])
            usleep(UInt32.random(in: 5_000...250_000, using: &generator))
            run.signal(SIGKILL)
            let result = await run.finish()
            if result.status == 128 + SIGKILL { killed += 1 } else { #expect(result.status == 0, "\(result.stderr)") }
        }
        #expect(killed >= 30, "only \(killed) of \(runs) runs were killed mid-way")
        #expect(splits >= 5 && merges >= 3)
        try server.control(["action": "calm"])
        let final = try await Binary.run(["run", job.job])
        #expect(final.status == 0, "\(final.stderr)")

        // Every change after the origin, once, and nothing else.
        let expected = try server.history().filter { ($0["lsn"] as! Int) > origin }.map {
            "\($0["id"]!)@\($0["lsn"]!):\($0["op"]!)"
        }
        let archived = try await job.archived()
        #expect(archived.count == expected.count, "archived \(archived.count), the server holds \(expected.count)")
        #expect(archived.sorted() == expected.sorted())
        let verify = try await Binary.run(["verify", job.job, "--deep", "--json"])
        #expect(verify.status == 0, "\(verify.stdout)")
        #expect(verify.stdout.contains(#""clean" : true"#))
        let manifest = try String(
            contentsOfFile: job.dir.path + "/lake/orders/_feedarchive/manifest/00000001.jsonl", encoding: .utf8)
        #expect(manifest.contains(#""kind":"split""#) && manifest.contains(#""kind":"merge""#))
    }

    /// The transform steps on the change feed in all-versions-and-deletes mode, under kill -9
    /// and a split: a filter by op, a filter on a field of `after`, a drop of the system
    /// properties and a mask. The archive holds exactly the changes after the origin the filters
    /// keep, transformed, and with the per-filter counts accounts for every one of them.
    @Test func transformsTakeTheChangeFeedUnderKillsAndASplit() async throws {
        let server = try CosmosTestServer(ranges: 2)
        let job = CosmosJob(server: server, mode: "all_versions_and_deletes", start: "now")
        let text = try String(contentsOfFile: job.job, encoding: .utf8)
        try
            (text + """
                transform:
                  - filter: {name: no-deletes, drop: {op: d}}
                  - filter: {name: high, keep: {field: after.v, ge: 268435456}}
                  - drop: [note, _rid, _self, _etag, _attachments]
                  - redact: {fields: [title], mask: "(title)"}

                """).write(toFile: job.job, atomically: true, encoding: .utf8)
        try server.control(["action": "generate", "count": 30, "seed": 400])  // before the origin
        #expect(try await Binary.run(["run", job.job]).status == 0)
        let origin = try #require(try server.control(["action": "stats"])["lsn"] as? Int)
        var generator = SystemRandomNumberGenerator()
        var killed = 0
        for round in 0..<16 {
            try server.control([
                "action": "generate", "count": Int.random(in: 20...60, using: &generator), "updates": 0.3,
                "deletes": 0.15, "seed": 401 + round,
            ])
            if round == 5 { try server.control(["action": "split", "range": try server.liveRanges()[0]]) }
            let run = try Binary.start(["run", job.job])
            usleep(UInt32.random(in: 5_000...200_000, using: &generator))
            run.signal(SIGKILL)
            let result = await run.finish()
            if result.status == 128 + SIGKILL { killed += 1 } else { #expect(result.status == 0, "\(result.stderr)") }
        }
        let final = try await Binary.run(["run", job.job])
        #expect(final.status == 0, "\(final.stderr)")
        let verify = try await Binary.run(["verify", job.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")

        // Which changes the filters keep, from the server's history on its own.
        var kept: [String] = []
        var counts: [String: Int] = ["no-deletes": 0, "high": 0]
        let changes = try server.history().filter { ($0["lsn"] as! Int) > origin }
        for change in changes {
            let doc = change["doc"] as? [String: Any]
            if change["op"] as! String == "delete" {
                counts["no-deletes"]! += 1
            } else if (doc?["v"] as? Int ?? 0) < 268_435_456 {
                counts["high"]! += 1
            } else {
                kept.append("\(change["id"]!)@\(change["lsn"]!)")
            }
        }
        let cat = try await Binary.run(["cat", job.job])
        var archived: [String] = []
        for line in cat.stdout.split(separator: "\n") {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let after = try #require(object["after"] as? [String: Any])
            let source = try #require(object["source"] as? [String: Any])
            archived.append("\(after["id"]!)@\(source["_lsn"]!)")
            #expect(after["note"] == nil && after["_rid"] == nil && after["_etag"] == nil, "\(line)")
            // Creates have a title, the generator's updates none: a mask never adds a field.
            #expect(after["title"] == nil || after["title"] as? String == "(title)", "\(line)")
            #expect((after["v"] as? Int ?? 0) >= 268_435_456 && after["_lsn"] != nil, "\(line)")
        }
        #expect(archived.sorted() == kept.sorted(), "archived \(archived.count), kept \(kept.count)")
        #expect(!cat.stdout.contains("doc \u{e9}") && !cat.stdout.contains(#"doc \u00e9"#))
        #expect(cat.stdout.contains(#""title":"(title)""#))
        #expect(!kept.isEmpty && counts.values.allSatisfy { $0 > 0 })
        var filtered: [String: Int] = [:]
        let manifest = job.dir.path + "/lake/orders/_feedarchive/manifest"
        for file in try FileManager.default.contentsOfDirectory(atPath: manifest).sorted() {
            for line in try String(contentsOfFile: manifest + "/" + file, encoding: .utf8).split(separator: "\n") {
                let entry = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                guard entry["kind"] as? String == "blob", entry["lineage"] as? String == "live" else { continue }
                for (name, count) in entry["filtered"] as? [String: Int] ?? [:] { filtered[name, default: 0] += count }
            }
        }
        // The counts cover the changes before the origin as well (the first run's): at least these.
        #expect(filtered["no-deletes", default: 0] >= counts["no-deletes"]!, "\(filtered) \(counts)")
        #expect(filtered["high", default: 0] >= counts["high"]!, "\(filtered) \(counts)")
        #expect(killed > 0)
    }

    /// A run stuck in a request that does not return within the stall timeout is ended by the
    /// watchdog with exit 75 instead of holding the job lock for good; the next run goes on and
    /// nothing is lost.
    @Test func aRunThatStopsMakingProgressIsEndedByTheWatchdog() async throws {
        let server = try CosmosTestServer(ranges: 2)
        let job = CosmosJob(server: server, mode: "latest_version", start: "beginning", timeout: "120s")
        try server.control(["action": "generate", "count": 100, "seed": 300])
        let first = try await Binary.run(["run", job.job])
        #expect(first.status == 0, "\(first.stderr)")
        try server.control(["action": "generate", "count": 100, "updates": 0.3, "seed": 301])
        try server.control(["action": "slow", "range": "1", "seconds": 60])
        let started = Date()
        let stuck = try await Binary.run(["run", job.job, "--stall-timeout", "2s"])
        #expect(stuck.status == 75, "\(stuck.stderr)")
        #expect(stuck.stderr.contains("orders: error (exit 75): no progress for"), "\(stuck.stderr)")
        #expect(Date().timeIntervalSince(started) < 30)
        let record = try String(
            contentsOfFile: job.dir.path + "/lake/orders/_feedarchive/last_run.json", encoding: .utf8)
        #expect(record.contains("no progress for"), "\(record)")

        try server.control(["action": "slow", "range": "1", "seconds": 0])
        let next = try await Binary.run(["run", job.job])
        #expect(next.status == 0, "\(next.stderr)")
        try await expectEveryCurrentDocumentOnce(server, job)
    }

    @Test func latestVersionRunsWithASplitArchiveEveryCurrentDocument() async throws {
        let server = try CosmosTestServer(ranges: 3)
        let job = CosmosJob(
            server: server, mode: "latest_version", start: "beginning", maxItemCount: 50, maxRecords: 200)
        try server.control(["action": "generate", "count": 500, "transaction": 2, "seed": 200])
        for round in 0..<4 {
            let result = try await Binary.run(["run", job.job])
            #expect(result.status == 0, "\(result.stderr)")
            try server.control([
                "action": "generate", "count": 200, "updates": 0.4, "deletes": 0.05, "seed": 201 + round,
            ])
            if round == 1 { try server.control(["action": "split", "range": "0"]) }
        }
        #expect(try await Binary.run(["run", job.job]).status == 0)
        try await expectEveryCurrentDocumentOnce(server, job)
    }

    /// The account is reached through the proxy the environment names, as curl would:
    /// `http_proxy` pointing nowhere fails the run (source unavailable), `no_proxy` bypasses it,
    /// and a proxy URL that cannot be used is a configuration error naming the variable.
    @Test func aProxyFromTheEnvironmentIsUsedBypassedOrRefused() async throws {
        let server = try CosmosTestServer(ranges: 1)
        let job = CosmosJob(server: server, mode: "latest_version", start: "beginning", timeout: "2s")
        try server.control(["action": "generate", "count": 20, "seed": 300])
        let unreachable = try await Binary.run(
            ["run", job.job], environment: ["http_proxy": "http://127.0.0.1:9", "no_proxy": nil, "NO_PROXY": nil])  // nothing listens there
        #expect(unreachable.status == 69, "\(unreachable.stderr)")
        #expect(unreachable.stderr.contains("127.0.0.1:9"), "\(unreachable.stderr)")
        let direct = try await Binary.run(
            ["run", job.job], environment: ["http_proxy": "http://127.0.0.1:9", "no_proxy": "localhost,127.0.0.1"])
        #expect(direct.status == 0, "\(direct.stderr)")
        let unusable = try await Binary.run(
            ["run", job.job],
            environment: ["http_proxy": "https://alice:s3cret@proxy.example:3128", "no_proxy": nil, "NO_PROXY": nil])
        #expect(unusable.status == 78, "\(unusable.stderr)")
        #expect(
            unusable.stderr.contains("http_proxy") && unusable.stderr.contains("only http:// proxies"),
            "\(unusable.stderr)")
        #expect(!unusable.stderr.contains("s3cret"), "\(unusable.stderr)")
    }

    /// A latest-version archive holds the current version of every live document, no change
    /// twice, and verifies clean.
    func expectEveryCurrentDocumentOnce(_ server: CosmosTestServer, _ job: CosmosJob) async throws {
        var current: [String: String] = [:]
        for change in try server.history() {
            let id = change["id"] as! String
            current[id] = change["op"] as! String == "delete" ? nil : "\(id)@\(change["lsn"]!):w"
        }
        let archived = try await job.archived()
        #expect(Set(current.values).isSubset(of: Set(archived)))
        #expect(Set(archived).count == archived.count)  // no change archived twice
        let verify = try await Binary.run(["verify", job.job, "--deep"])
        #expect(verify.status == 0, "\(verify.stdout)")
    }
}
