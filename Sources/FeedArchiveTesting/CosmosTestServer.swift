import FeedArchive
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The Cosmos DB REST test server (`scripts/cosmos_server.py`) in a child process on a loopback
/// port, and its control endpoint: generate documents, split and merge ranges, throttle.
public final class CosmosTestServer: @unchecked Sendable {
    // @unchecked: all stored properties are immutable after init.
    public static let key = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
    public static let database = "feeddb"
    public static let container = "orders"

    /// The repository root (for scripts/ and .venv/).
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    public let port: Int
    public let pid: pid_t
    public var endpoint: String { "http://127.0.0.1:\(port)/" }
    private let directory: String

    public init(ranges: Int = 4, seedDocs: Int = 0, docBytes: Int = 300) throws {
        directory = NSTemporaryDirectory() + "/cosmos-server-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let portFile = directory + "/port"
        pid = try spawn(
            "python3",
            [
                Self.packageRoot + "/scripts/cosmos_server.py", "--port-file", portFile, "--ranges", String(ranges),
                "--seed-docs", String(seedDocs), "--doc-bytes", String(docBytes),
            ], stderr: directory + "/server.log")
        var found: Int?
        for _ in 0..<600 {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let value = Int(text) {
                found = value
                break
            }
            usleep(50_000)
        }
        guard let found else {
            kill(pid, SIGKILL)
            _ = reap(pid)
            throw FeedArchiveError.sourceUnavailable(
                "the cosmos test server did not start (see \(directory)/server.log)")
        }
        port = found
    }

    deinit { stop() }

    /// Stops the server (idempotent).
    public func stop() {
        if kill(pid, SIGTERM) == 0 { _ = reap(pid) }
    }

    /// Sends one control command (see `control()` in cosmos_server.py) and returns its answer.
    @discardableResult
    public func control(_ command: [String: Any]) throws -> [String: Any] {
        var request = URLRequest(url: URL(string: endpoint + "_control")!)
        request.httpMethod = "POST"
        request.httpBody = try JSONSerialization.data(withJSONObject: command)
        request.timeoutInterval = 120
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox()
        URLSession.shared.dataTask(with: request) { data, response, error in
            box.set(data: data, status: (response as? HTTPURLResponse)?.statusCode ?? 0, error: error)
            done.signal()
        }.resume()
        done.wait()
        let (data, status, error) = box.get()
        if let error { throw FeedArchiveError.sourceUnavailable("control \(command["action"] ?? "?"): \(error)") }
        guard status == 200, let data, let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw FeedArchiveError.sourceUnavailable(
                "control \(command["action"] ?? "?"): HTTP \(status) \(String(decoding: data ?? Data(), as: UTF8.self))"
            )
        }
        return object
    }

    private final class ResultBox: @unchecked Sendable {
        // @unchecked: written once by the completion handler before the semaphore is signalled.
        private var value: (Data?, Int, (any Error)?) = (nil, 0, nil)
        func set(data: Data?, status: Int, error: (any Error)?) { value = (data, status, error) }
        func get() -> (Data?, Int, (any Error)?) { value }
    }

    /// Every change the server holds, in LSN order: `lsn`, `op` (create/replace/delete), `id`, `pk`.
    public func history() throws -> [[String: Any]] {
        (try control(["action": "history"])["changes"] as? [[String: Any]]) ?? []
    }

    /// The live partition key range ids.
    public func liveRanges() throws -> [String] {
        ((try control(["action": "ranges"])["live"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
    }

    /// A job file's `source:` block for this server.
    public func sourceYAML(mode: String = "latest_version", maxItemCount: Int = 100, extra: String = "") -> String {
        """
        source:
          kind: cosmos
          endpoint: \(endpoint)
          key: \(Self.key)
          database: \(Self.database)
          container: \(Self.container)
          mode: \(mode)
          max_item_count: \(maxItemCount)
          timeout: 5s
        \(extra)
        """
    }
}
