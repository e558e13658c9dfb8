import FeedArchive
import Foundation
import NIOCore
import Synchronization

/// The REST API over `HTTPClient` (SwiftNIO): signs each request with the master key, sends the
/// protocol headers, and hands back 304s and errors untouched (no cache).
/// Throttling (429) is waited out here, `x-ms-retry-after-ms` at a time, like the SDKs do.
final class CosmosRESTClient: Sendable {
    static let apiVersion = "2020-07-15"
    let settings: CosmosSourceSettings
    private let http: HTTPClient

    init(settings: CosmosSourceSettings, proxy: HTTPProxy? = nil) {
        self.settings = settings
        http = HTTPClient(endpoint: settings.endpoint, timeout: settings.timeout, proxy: proxy)
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
        var throttled = 0
        while true {
            guard !closed.load(ordering: .relaxed) else {
                throw FeedArchiveError.temporary("\(settings.endpoint.absoluteString)\(path): the source was closed")
            }
            Liveness.current?.beat()
            let response = try await send(
                path: path, resourceType: resourceType, resourceLink: resourceLink, headers: headers)
            guard response.status == 429 else { return response }
            throttled += 1
            let wait = Double(response.headers["x-ms-retry-after-ms"] ?? "") ?? 100
            guard throttled <= settings.throttleRetries else {
                throw FeedArchiveError.temporary(
                    "\(settings.endpoint.absoluteString)\(path): throttled (429) \(throttled) times in a row; x-ms-retry-after-ms \(Int(wait)) (raise the container's throughput or lower max_item_count)"
                )
            }
            try? await Task.sleep(nanoseconds: UInt64(min(max(wait, 1), 30_000) * 1_000_000))
        }
    }

    private func send(path: String, resourceType: String, resourceLink: String, headers: [String: String]) async throws
        -> CosmosResponse
    {
        // Ids may hold spaces and other characters a URL path cannot: encode each segment (the
        // signature uses the link as is).
        var unreserved = CharacterSet.urlPathAllowed
        unreserved.remove(charactersIn: "/")
        let encoded = path.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: unreserved) ?? String($0) }.joined(separator: "/")
        let url = settings.endpoint.absoluteString + encoded
        let date = MasterKeyAuthorization.httpDate(Date())
        var fields = [
            ("x-ms-date", date),
            ("x-ms-version", Self.apiVersion),
            (
                "authorization",
                settings.authorization.header(
                    verb: "GET", resourceType: resourceType, resourceLink: resourceLink, date: date)
            ),
            ("Accept", "application/json"),
            ("User-Agent", "feedarchive"),
        ]
        fields += headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        do {
            let response = try await http.get(http.basePath + encoded, headers: fields)
            return CosmosResponse(
                status: response.status, headers: response.headers, body: Data(response.body.readableBytesView))
        } catch {
            throw FeedArchiveError.sourceUnavailable("\(url): \(error)")
        }
    }
}
