import FeedArchive
import Foundation

extension CosmosSource {
    /// Turns an unexpected answer into the error a user can act on.
    func check(_ response: CosmosResponse, what: String) throws {
        switch response.status {
        case 200..<300, 304: return
        case 401, 403:
            throw settings.error(
                "key", "the account refused the key for \(what) (HTTP \(response.status)): \(response.message.prefix(160)); check the key (and the clock: x-ms-date must be within 15 minutes)")
        case 404:
            throw settings.error("container", "\(what) does not exist at \(settings.endpoint.absoluteString) (HTTP 404)")
        case 429, 408, 449, 500..<600:
            throw FeedArchiveError.sourceUnavailable("\(what): HTTP \(response.status) substatus \(response.substatus): \(response.message)")
        default:
            throw FeedArchiveError.data(path: nil, message: "\(what): HTTP \(response.status) substatus \(response.substatus): \(response.message)")
        }
    }
}
