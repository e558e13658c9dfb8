import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// The test server is only as good as its faithfulness: the official `azure-cosmos` Python SDK
/// (installed into .venv by scripts/bootstrap) reads it from the beginning, then from its own
/// continuation across a split and a merge, and gets exactly the server's changes.
@Suite(.serialized) struct SDKFaithfulnessTests {
    static var python: String { CosmosTestServer.packageRoot + "/.venv/bin/python" }

    /// Runs scripts/cosmos_sdk_read.py; returns the `id@_lsn` lines it read.
    func sdkRead(
        _ server: CosmosTestServer, dir: TempDirectory, continuationIn: String?, continuationOut: String,
        controlAtPage: (Int, String)? = nil
    ) throws -> [String] {
        guard FileManager.default.isExecutableFile(atPath: Self.python) else {
            throw TestFailureText("no \(Self.python): run scripts/bootstrap (it installs azure-cosmos into .venv)")
        }
        let out = dir.path + "/items-\(UUID().uuidString)"
        var arguments = [
            CosmosTestServer.packageRoot + "/scripts/cosmos_sdk_read.py", "--endpoint", server.endpoint, "--key",
            CosmosTestServer.key,
            "--out", out, "--continuation-out", continuationOut, "--max-item-count", "37",
        ]
        if let continuationIn { arguments += ["--continuation-in", continuationIn] }
        if let (page, command) = controlAtPage {
            arguments += ["--control-at-page", String(page), "--control", command]
        }
        let pid = try spawn(Self.python, arguments, stdout: dir.path + "/sdk.out", stderr: dir.path + "/sdk.err")
        let status = reap(pid)
        guard status == 0 else {
            throw TestFailureText(
                "the SDK reader failed (\(status)): \((try? String(contentsOfFile: dir.path + "/sdk.err", encoding: .utf8)) ?? "")"
            )
        }
        return try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    @Test func theOfficialSDKReadsExactlyTheServersChangesAcrossASplitAndAMerge() throws {
        let server = try CosmosTestServer(ranges: 4)
        let dir = TempDirectory()
        let continuation = dir.path + "/continuation"
        try server.control([
            "action": "generate", "count": 400, "transaction": 3, "updates": 0.2, "deletes": 0.05, "seed": 21,
        ])
        // Range 0 splits while the SDK is in the middle of its first read (its routing map is stale).
        let first = try sdkRead(
            server, dir: dir, continuationIn: nil, continuationOut: continuation,
            controlAtPage: (2, #"{"action":"split","range":"0"}"#))
        let expectedFirst = try latestVersions(server)
        #expect(first.count == expectedFirst.count)
        #expect(first.sorted() == expectedFirst.sorted())
        let lsnAfterFirst = try #require(try server.control(["action": "stats"])["lsn"] as? Int)

        #expect(try server.liveRanges().count == 5)
        // More changes, then range 1 splits and ranges 2 and 3 merge before the SDK reads again.
        try server.control(["action": "generate", "count": 150, "updates": 0.3, "seed": 22])
        try server.control(["action": "split", "range": "1"])
        try server.control(["action": "merge", "ranges": ["2", "3"]])
        try server.control([
            "action": "generate", "count": 150, "transaction": 2, "updates": 0.3, "deletes": 0.05, "seed": 23,
        ])
        let second = try sdkRead(server, dir: dir, continuationIn: continuation, continuationOut: continuation)
        let expectedSecond = try latestVersions(server).filter { Int($0.split(separator: "@")[1])! > lsnAfterFirst }
        #expect(second.count == expectedSecond.count)
        #expect(second.sorted() == expectedSecond.sorted())
        #expect(second.count > 250)

        // Drained: from its last continuation the SDK finds nothing new.
        #expect(try sdkRead(server, dir: dir, continuationIn: continuation, continuationOut: continuation).isEmpty)
        // The SDK was made to go through the 410 of the split in the middle of its read.
        let statuses = ((try server.control(["action": "stats"])["feed_requests"] as? [[Any]]) ?? []).compactMap {
            $0[1] as? Int
        }
        #expect(statuses.contains(410))
    }
}

struct TestFailureText: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
