import FeedArchive
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// The REST API over `HTTPClient` (SwiftNIO): signs each request with the master key, sends the
/// protocol headers, and hands back 304s and errors untouched (no cache).
/// Throttling (429) is waited out here, `x-ms-retry-after-ms` at a time, like the SDKs do.
final class CosmosRESTClient: Sendable {
    static let apiVersion = "2020-07-15"
    let endpoint: URL
    let authorization: MasterKeyAuthorization
    /// Times a throttled (429) request waits `x-ms-retry-after-ms` before it fails.
    let throttleRetries: Int
    private let http: HTTPClient

    convenience init(settings: CosmosSourceSettings, proxy: HTTPProxy? = nil) {
        self.init(
            endpoint: settings.endpoint, authorization: settings.authorization, timeout: settings.timeout,
            throttleRetries: settings.throttleRetries, proxy: proxy)
    }

    init(
        endpoint: URL, authorization: MasterKeyAuthorization, timeout: Double, throttleRetries: Int,
        proxy: HTTPProxy? = nil
    ) {
        self.endpoint = endpoint
        self.authorization = authorization
        self.throttleRetries = throttleRetries
        http = HTTPClient(endpoint: endpoint, timeout: timeout, proxy: proxy)
    }

    private let closed = Atomic<Bool>(false)

    /// No request starts after this; idle connections are closed. A read ahead still running
    /// (a 429 wait, a range reload after a 410) finishes on its own connection.
    func close() {
        closed.store(true, ordering: .relaxed)
        http.closeIdle()
    }

    /// GET `path` (e.g. `dbs/db/colls/c/docs`), signed for `resourceType` and `resourceLink`.
    func get(path: String, resourceType: String, resourceLink: String, headers: [String: String] = [:]) async throws
        -> CosmosResponse
    {
        try await request(
            .GET, path: path, resourceType: resourceType, resourceLink: resourceLink, headers: headers, body: nil)
    }

    /// `verb` on `path` with an optional JSON body; a throttled answer (429) is waited out and
    /// sent again. Only for idempotent requests (reads, queries, upserts, deletes).
    func request(
        _ verb: HTTPMethod, path: String, resourceType: String, resourceLink: String, headers: [String: String] = [:],
        body: [UInt8]?
    ) async throws -> CosmosResponse {
        var throttled = 0
        while true {
            guard !closed.load(ordering: .relaxed) else {
                throw FeedArchiveError.temporary("\(endpoint.absoluteString)\(path): the client was closed")
            }
            Liveness.current?.beat()
            let response = try await send(
                verb, path: path, resourceType: resourceType, resourceLink: resourceLink, headers: headers, body: body)
            guard response.status == 429 else { return response }
            throttled += 1
            let wait = Double(response.headers["x-ms-retry-after-ms"] ?? "") ?? 100
            guard throttled <= throttleRetries else {
                throw FeedArchiveError.temporary(
                    "\(endpoint.absoluteString)\(path): throttled (429) \(throttled) times in a row; x-ms-retry-after-ms \(Int(wait)) (raise the container's throughput or lower max_item_count)"
                )
            }
            try? await Task.sleep(nanoseconds: UInt64(min(max(wait, 1), 30_000) * 1_000_000))
        }
    }

    private func send(
        _ verb: HTTPMethod, path: String, resourceType: String, resourceLink: String, headers: [String: String],
        body: [UInt8]?
    ) async throws -> CosmosResponse {
        // Ids may hold spaces and other characters a URL path cannot: encode each segment (the
        // signature uses the link as is).
        var unreserved = CharacterSet.urlPathAllowed
        unreserved.remove(charactersIn: "/")
        let encoded = path.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: unreserved) ?? String($0) }.joined(separator: "/")
        let url = endpoint.absoluteString + encoded
        let date = MasterKeyAuthorization.httpDate(Date())
        var fields = [
            ("x-ms-date", date),
            ("x-ms-version", Self.apiVersion),
            (
                "authorization",
                authorization.header(
                    verb: verb.rawValue, resourceType: resourceType, resourceLink: resourceLink, date: date)
            ),
            ("Accept", "application/json"),
            ("User-Agent", "feedarchive"),
        ]
        fields += headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        do {
            let response = try await http.request(verb, http.basePath + encoded, headers: fields, body: body)
            return CosmosResponse(
                status: response.status, headers: response.headers, body: Data(response.body.readableBytesView))
        } catch {
            throw FeedArchiveError.sourceUnavailable("\(url): \(error)")
        }
    }
}
