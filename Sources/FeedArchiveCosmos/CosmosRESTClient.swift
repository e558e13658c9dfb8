import FeedArchive
import Foundation
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One answer of the service: status, the headers feedarchive reads (lower-cased), the body.
struct CosmosResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data

    var substatus: Int { Int(headers["x-ms-substatus"] ?? "") ?? 0 }
    /// The service's own message from an error body, for error texts.
    var message: String {
        if let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any], let message = object["message"] as? String {
            return String(message.prefix(400))
        }
        return String(decoding: body.prefix(400), as: UTF8.self)
    }
}

/// The REST API over URLSession (FoundationNetworking, libcurl): signs each request with the
/// master key, sends the protocol headers, and hands back 304s and errors untouched (no cache).
/// Throttling (429) is waited out here, `x-ms-retry-after-ms` at a time, like the SDKs do.
final class CosmosRESTClient: Sendable {
    static let apiVersion = "2020-07-15"
    let settings: CosmosSourceSettings
    private let session: URLSession

    init(settings: CosmosSourceSettings) {
        self.settings = settings
        let configuration = URLSessionConfiguration.ephemeral
        configuration.urlCache = nil
        configuration.requestCachePolicy = .reloadIgnoringLocalAndRemoteCacheData
        configuration.timeoutIntervalForRequest = settings.timeout
        configuration.timeoutIntervalForResource = settings.timeout * 2
        configuration.httpMaximumConnectionsPerHost = 8
        configuration.httpShouldSetCookies = false
        session = URLSession(configuration: configuration)
    }

    private let closed = Atomic<Bool>(false)

    /// No request starts after this. The session is not invalidated: a read ahead still
    /// running (a 429 wait, a range reload after a 410) would start a request on it, and an
    /// invalidated URLSession traps on Linux ("Session invalidated"), killing the process and
    /// the jobs after this one. It is released with the client.
    func close() { closed.store(true, ordering: .relaxed) }

    /// GET `path` (e.g. `dbs/db/colls/c/docs`), signed for `resourceType` and `resourceLink`.
    func get(path: String, resourceType: String, resourceLink: String, headers: [String: String] = [:]) async throws -> CosmosResponse {
        var throttled = 0
        while true {
            guard !closed.load(ordering: .relaxed) else {
                throw FeedArchiveError.temporary("\(settings.endpoint.absoluteString)\(path): the source was closed")
            }
            Liveness.current?.beat()
            let response = try await send(path: path, resourceType: resourceType, resourceLink: resourceLink, headers: headers)
            guard response.status == 429 else { return response }
            throttled += 1
            let wait = Double(response.headers["x-ms-retry-after-ms"] ?? "") ?? 100
            guard throttled <= settings.throttleRetries else {
                throw FeedArchiveError.temporary(
                    "\(settings.endpoint.absoluteString)\(path): throttled (429) \(throttled) times in a row; x-ms-retry-after-ms \(Int(wait)) (raise the container's throughput or lower max_item_count)")
            }
            try? await Task.sleep(nanoseconds: UInt64(min(max(wait, 1), 30_000) * 1_000_000))
        }
    }

    private func send(path: String, resourceType: String, resourceLink: String, headers: [String: String]) async throws -> CosmosResponse {
        // Ids may hold spaces and other characters a URL path cannot: encode each segment (the
        // signature uses the link as is).
        var unreserved = CharacterSet.urlPathAllowed
        unreserved.remove(charactersIn: "/")
        let encoded = path.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: unreserved) ?? String($0) }.joined(separator: "/")
        guard let url = URL(string: settings.endpoint.absoluteString + encoded) else {
            throw FeedArchiveError.data(path: nil, message: "cannot form a URL from \(settings.endpoint.absoluteString) and \(path)")
        }
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalAndRemoteCacheData, timeoutInterval: settings.timeout)
        request.httpMethod = "GET"
        let date = MasterKeyAuthorization.httpDate(Date())
        request.setValue(date, forHTTPHeaderField: "x-ms-date")
        request.setValue(Self.apiVersion, forHTTPHeaderField: "x-ms-version")
        request.setValue(
            settings.authorization.header(verb: "GET", resourceType: resourceType, resourceLink: resourceLink, date: date),
            forHTTPHeaderField: "authorization")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.setValue("feedarchive", forHTTPHeaderField: "User-Agent")
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch let error as URLError {
            let what = error.code == .timedOut ? "timed out after \(Int(settings.timeout)) s" : error.localizedDescription
            throw FeedArchiveError.sourceUnavailable("\(url.absoluteString): \(what)")
        } catch {
            throw FeedArchiveError.sourceUnavailable("\(url.absoluteString): \(error)")
        }
        guard let http = response as? HTTPURLResponse else {
            throw FeedArchiveError.sourceUnavailable("\(url.absoluteString): not an HTTP response")
        }
        var fields: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            if let name = name as? String, let value = value as? String { fields[name.lowercased()] = value }
        }
        return CosmosResponse(status: http.statusCode, headers: fields, body: data)
    }
}
