import FeedArchive
import Foundation

extension CosmosSource {
    /// Turns an unexpected answer into the error a user can act on. A refused key (401) or a
    /// forbidden request (403) is a refusal: no retry can help, so it names the setting.
    func check(_ response: CosmosResponse, what: String) throws {
        let key = settings.keySetting
        let place = settings.places["key"].map { " (\(key) is at \($0))" } ?? ""
        switch response.status {
        case 200..<300, 304: return
        case 401:
            throw FeedArchiveError.sourceRefused(
                setting: key,
                message: "the account refused the key for \(what) (HTTP 401): \(response.message.prefix(160))\(place)",
                hint:
                    "check \(key): it must be one of the account's keys (primary or secondary, read-write or read-only) as it is now, after any rotation; and check the clock: x-ms-date must be within 15 minutes of the service's"
            )
        case 403:
            throw FeedArchiveError.sourceRefused(
                setting: key,
                message:
                    "the account forbids \(what) (HTTP 403 substatus \(response.substatus)): \(response.message.prefix(200))\(place)",
                hint:
                    "\(key) gives access only when the account accepts key authorization (local authorization not disabled) and its firewall lets this machine's address through; the clock must also be within 15 minutes of the service's"
            )
        case 404:
            throw settings.error(
                "container", "\(what) does not exist at \(settings.endpoint.absoluteString) (HTTP 404)")
        case 429, 408, 449, 500..<600:
            throw FeedArchiveError.sourceUnavailable(
                "\(what): HTTP \(response.status) substatus \(response.substatus): \(response.message)")
        default:
            throw FeedArchiveError.data(
                path: nil,
                message: "\(what): HTTP \(response.status) substatus \(response.substatus): \(response.message)")
        }
    }
}
