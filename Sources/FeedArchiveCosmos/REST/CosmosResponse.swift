import Foundation

/// One answer of the service: status, the headers feedarchive reads (lower-cased), the body.
struct CosmosResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data

    var substatus: Int { Int(headers["x-ms-substatus"] ?? "") ?? 0 }
    /// The service's own message from an error body, for error texts.
    var message: String {
        if let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
            let message = object["message"] as? String
        {
            return String(message.prefix(400))
        }
        return String(decoding: body.prefix(400), as: UTF8.self)
    }
}
