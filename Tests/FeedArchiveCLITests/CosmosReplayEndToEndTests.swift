import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// `feedarchive replay` into a Cosmos DB container with another partition key: the test
/// server's container, written by the official Python SDK (creates, replaces, upserts,
/// deletes, documents moving to another tenant), is archived in all-versions-and-deletes mode
/// and replayed into a second container partitioned by `/tenantId`. The SDK then reads the
/// target: it holds exactly the final version of every live document (without the system
/// properties) and none of the deleted ones, also after replays killed with kill -9 mid-way;
/// a replay of a finished target applies nothing.
@Suite(.serialized) struct CosmosReplayEndToEndTests {
    static var python: String { CosmosTestServer.packageRoot + "/.venv/bin/python" }
    static let systemProperties: Set<String> = ["_rid", "_etag", "_ts", "_self", "_attachments", "_lsn"]

    /// Runs scripts/cosmos_sdk_docs.py with the official SDK; returns its stdout.
    @discardableResult
    func sdk(_ server: CosmosTestServer, _ dir: TempDirectory, _ arguments: [String]) async throws -> String {
        guard FileManager.default.isExecutableFile(atPath: Self.python) else {
            throw TestFailure("no \(Self.python): run scripts/bootstrap (it installs azure-cosmos into .venv)")
        }
        let out = dir.path + "/sdk-\(UUID().uuidString)"
        let pid = try spawn(
            Self.python,
            [
                CosmosTestServer.packageRoot + "/scripts/cosmos_sdk_docs.py", arguments[0], "--endpoint",
                server.endpoint, "--key", CosmosTestServer.key,
            ] + arguments.dropFirst(), stdout: out + ".out", stderr: out + ".err")
        let status = await reapAsync(pid)
        guard status == 0 else {
            throw TestFailure(
                "the SDK script \(arguments[0]) failed (\(status)): \((try? String(contentsOfFile: out + ".err", encoding: .utf8)) ?? "")"
            )
        }
        return (try? String(contentsOfFile: out + ".out", encoding: .utf8)) ?? ""
    }

    /// Every document of a container as the SDK reads it, by id, without system properties
    /// (and, in the target, without the replay's own documents), as canonical JSON text.
    func documents(
        _ server: CosmosTestServer, _ dir: TempDirectory, container: String, partial: Bool = false
    ) async throws -> [String: String] {
        let out = dir.path + "/dump-\(UUID().uuidString).json"
        try await sdk(server, dir, ["dump", "--coll", container, "--out", out])
        let list =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as! [[String: Any]]
        var byID: [String: String] = [:]
        for document in list {
            let id = document["id"] as! String
            if id.hasPrefix("_feedarchive_replay") { continue }
            let stripped = document.filter { !Self.systemProperties.contains($0.key) }
            // Mid-way (`partial`), a document moved to another partition may still be in both.
            #expect(partial || byID[id] == nil, "document \(id) is in \(container) twice")
            byID[id] = String(
                decoding: try JSONSerialization.data(withJSONObject: stripped, options: [.sortedKeys]), as: UTF8.self)
        }
        return byID
    }

    @Test func aContainerMovesToAnotherPartitionKeyAndAKilledReplayEndsTheSame() async throws {
        let server = try CosmosTestServer(ranges: 4)
        let dir = TempDirectory("feedarchive-cosmos-replay")
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
              mode: all_versions_and_deletes
              max_item_count: 25
              timeout: 5s
            archive:
              root: lake
            batch:
              max_records: 40
            start: now

            """)
        dir.write(
            "by-tenant.yaml",
            """
            name: by-tenant
            archive_job: orders.yaml
            target:
              kind: cosmos
              endpoint: \(server.endpoint)
              key: ${FEEDARCHIVE_TEST_COSMOS_KEY}
              database: \(CosmosTestServer.database)
              container: orders_by_tenant
              partition_key: /tenantId
              concurrency: 4
              timeout: 5s

            """)
        let environment = ["FEEDARCHIVE_TEST_COSMOS_KEY": CosmosTestServer.key]
        try await sdk(server, dir, ["create-container", "--coll", "orders_by_tenant", "--partition-key", "/tenantId"])
        let origin = try await Binary.run(["run", dir.path + "/orders.yaml"])
        #expect(origin.status == 0, "\(origin.stderr)")

        // A workload in rounds, archived as it goes, and replayed once in the middle. Deletes
        // carry their previous image before that replay and not after it (the service's
        // default): a document made before it and deleted after it is found by a query.
        func round(_ seed: Int, _ extra: [String] = []) async throws {
            try await sdk(server, dir, ["workload", "--seed", String(seed), "--count", "120"] + extra)
            try server.control(["action": "storm", "status": 429, "count": 3, "retry_after_ms": 10])
            let run = try await Binary.run(["run", dir.path + "/orders.yaml"])
            #expect(run.status == 0, "\(run.stderr)")
        }
        try await round(1)
        try await round(2)
        let first = try await Binary.run(["replay", dir.path + "/by-tenant.yaml"], environment: environment)
        #expect(first.status == 0, "\(first.stderr)")
        try server.control(["action": "previous_images", "deletes": false])
        try await round(3)
        try await round(4)
        // The ids of round 2 come back (deleted ones made again).
        try await round(2, ["--upsert-creates"])

        let source = try await documents(server, dir, container: CosmosTestServer.container)
        let expected = source.filter { $0.value.contains(#""tenantId":"#) }
        let untenanted = source.count - expected.count
        #expect(expected.count > 100, "only \(expected.count) live documents")
        #expect(untenanted > 0, "the workload made no document without a tenant")
        let history = try server.history()
        #expect(history.contains { $0["op"] as? String == "delete" })

        // Replays killed at random moments, with throttling and 503s on the way; each request
        // on documents takes a few milliseconds, so that a kill lands in the middle of a batch.
        try server.control(["action": "slow", "on": "docs", "seconds": 0.01])
        var generator = SystemRandomNumberGenerator()
        var killed = 0
        var finished = false
        for attempt in 0..<12 where killed < 4 {
            try server.control([
                "action": "storm", "on": "docs", "status": attempt % 2 == 0 ? 429 : 503, "count": 3,
                "retry_after_ms": 10,
            ])
            let replay = try Binary.start(["replay", dir.path + "/by-tenant.yaml"], environment: environment)
            usleep(UInt32.random(in: 50_000...600_000, using: &generator))
            replay.signal(SIGKILL)
            let result = await replay.finish()
            if result.status == 128 + SIGKILL {
                killed += 1
            } else {
                #expect(result.status == 0, "\(result.stderr)")
                finished = true
                break  // later replays would have nothing to do
            }
        }
        #expect(killed >= 3, "only \(killed) replays were killed mid-way")
        try server.control(["action": "calm"])
        if !finished {
            // Killed before its positions were written, but not before its first documents.
            #expect(!(try await documents(server, dir, container: "orders_by_tenant", partial: true)).isEmpty)
        }
        let final = try await Binary.run(["replay", dir.path + "/by-tenant.yaml"], environment: environment)
        #expect(final.status == 0, "\(final.stderr)")
        #expect(!final.stderr.contains(CosmosTestServer.key))

        let target = try await documents(server, dir, container: "orders_by_tenant")
        #expect(target.count == expected.count, "the target holds \(target.count), the source \(expected.count)")
        for (id, document) in expected where target[id] != document {
            Issue.record("document \(id): the target holds \(target[id] ?? "nothing"), the source \(document)")
        }
        let deleted = Set(history.compactMap { $0["id"] as? String }).subtracting(source.keys)
        #expect(!deleted.isEmpty)
        #expect(deleted.isDisjoint(with: target.keys))

        // Both ways of finding a deleted document's partition were used.
        let requests = try #require(try server.control(["action": "stats"])["doc_requests"] as? [String: Int])
        #expect((requests["delete"] ?? 0) > 0 && (requests["query"] ?? 0) > 0, "\(requests)")

        // Finished: another replay applies nothing and changes nothing.
        let again = try await Binary.run(["replay", dir.path + "/by-tenant.yaml"], environment: environment)
        #expect(again.status == 0 && again.stderr.contains("replayed 0 changes"), "\(again.stderr)")
        #expect(try await documents(server, dir, container: "orders_by_tenant") == target)

        // The documents without a tenant are dead letters, counted by --status.
        let status = try await Binary.run(
            ["replay", dir.path + "/by-tenant.yaml", "--status"], environment: environment)
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("behind: 0 changes"), "\(status.stdout)")
        let letters = status.stdout.split(separator: "\n").first { $0.contains("dead letters: ") }
        #expect(letters != nil && !letters!.hasSuffix("dead letters: 0"), "\(status.stdout)")

        // --from-scratch forgets the positions and the dead letters, keeps the documents, and
        // replays everything again to the same target.
        let scratch = try await Binary.run(
            ["replay", dir.path + "/by-tenant.yaml", "--from-scratch"], environment: environment)
        #expect(scratch.status == 0 && !scratch.stderr.contains("replayed 0 changes"), "\(scratch.stderr)")
        #expect(try await documents(server, dir, container: "orders_by_tenant") == target)
        let statusAgain = try await Binary.run(
            ["replay", dir.path + "/by-tenant.yaml", "--status"], environment: environment)
        #expect(statusAgain.stdout == status.stdout, "\(statusAgain.stdout)")
    }
}
