import FeedArchive
import Foundation

/// The `source:` block of a job with `kind: cosmos`.
public struct CosmosSourceSettings: Sendable {
    /// Account endpoint, e.g. `https://myaccount.documents.azure.com:443/`.
    public var endpoint: URL
    public var database: String
    public var container: String
    public var mode: CosmosFeedMode
    /// `x-ms-max-item-count` of a change feed read (the job's page size caps it too).
    public var maxItemCount: Int
    /// Partition key path of the container (`/pk`); read from the container when not set.
    public var partitionKeyPath: String?
    /// Seconds before a request counts as timed out (then retried with backoff).
    public var timeout: Double
    /// Times a throttled (429) read waits `x-ms-retry-after-ms` before the error goes to the run's backoff.
    public var throttleRetries: Int
    let authorization: MasterKeyAuthorization
    /// Where each setting came from, for errors the account reports (wrong key, no container).
    var places: [String: String] = [:]
    /// The job-file key the account key came from (`source.key` or `source.key_file`), for the
    /// error that says the account refused it.
    var keySetting = "source.key"

    /// Reads and checks the settings. The key comes from `key: ${ENV_VAR}` or `key_file:`
    /// (relative to the job file); it is never printed.
    public static func parse(_ node: ConfigNode) throws -> CosmosSourceSettings {
        let map = try node.mapping("source")
        _ = map.optional("kind")
        var places: [String: String] = [:]
        func string(_ key: String) throws -> String? {
            guard let node = map.optional(key) else { return nil }
            places[key] = node.place
            return try node.string("source.\(key)")
        }
        func required(_ key: String) throws -> String {
            guard let value = try string(key) else {
                throw map.node.error("source is missing the required key '\(key)'")
            }
            guard !value.isEmpty else { throw map.node.error("source.\(key) is empty") }
            return value
        }
        let account = try Account.parse(map, what: "source")
        let endpoint = account.endpoint
        let authorization = account.authorization
        let keySetting = account.keySetting
        places.merge(account.places) { new, _ in new }
        let database = try required("database")
        let container = try required("container")

        var mode = CosmosFeedMode.latestVersion
        if let node = map.optional("mode") {
            let text = try node.string("source.mode")
            guard let value = CosmosFeedMode(rawValue: text) else {
                throw node.error("source.mode must be latest_version or all_versions_and_deletes, not '\(text)'")
            }
            mode = value
        }
        var maxItemCount = 1000
        if let node = map.optional("max_item_count") {
            maxItemCount = try node.int("source.max_item_count")
            guard (1...10_000).contains(maxItemCount) else {
                throw node.error("source.max_item_count must be in 1...10000")
            }
        }
        var path: String?
        if let node = map.optional("partition_key_path") {
            let text = try node.string("source.partition_key_path")
            guard text.hasPrefix("/"), text.count > 1 else {
                throw node.error("source.partition_key_path must look like /pk, not '\(text)'")
            }
            path = text
        }
        var timeout = 30.0
        if let node = map.optional("timeout") { timeout = try node.duration("source.timeout") }
        var throttleRetries = 9
        if let node = map.optional("throttle_retries") {
            throttleRetries = try node.int("source.throttle_retries")
            guard (0...100).contains(throttleRetries) else {
                throw node.error("source.throttle_retries must be in 0...100")
            }
        }
        try map.finish()
        var settings = CosmosSourceSettings(
            endpoint: endpoint, database: database, container: container, mode: mode, maxItemCount: maxItemCount,
            partitionKeyPath: path, timeout: timeout, throttleRetries: throttleRetries, authorization: authorization)
        settings.places = places
        settings.keySetting = keySetting
        return settings
    }

    /// The account's endpoint and key from a `source:` or `target:` block: `endpoint`, and
    /// `key: ${ENV_VAR}` or `key_file:` (relative to the job file). The key is never printed.
    struct Account {
        var endpoint: URL
        var authorization: MasterKeyAuthorization
        /// `<what>.key` or `<what>.key_file`.
        var keySetting: String
        var places: [String: String]

        static func parse(_ map: ConfigMapping, what: String) throws -> Account {
            var places: [String: String] = [:]
            guard let endpointNode = map.optional("endpoint") else {
                throw map.node.error("\(what) is missing the required key 'endpoint'")
            }
            places["endpoint"] = endpointNode.place
            let endpointText = try endpointNode.string("\(what).endpoint")
            guard var endpoint = URL(string: endpointText), let scheme = endpoint.scheme,
                ["http", "https"].contains(scheme), endpoint.host != nil
            else {
                throw endpointNode.error(
                    "\(what).endpoint must be an http(s) URL such as https://myaccount.documents.azure.com:443/, not '\(endpointText)'"
                )
            }
            if !endpoint.absoluteString.hasSuffix("/") { endpoint = URL(string: endpoint.absoluteString + "/")! }
            let keyNode = map.optional("key")
            let keyFileNode = map.optional("key_file")
            let keyText: String
            var keySetting = "\(what).key"
            switch (keyNode, keyFileNode) {
            case (nil, nil):
                throw map.node.error("\(what) needs the account key: key: ${ENV_VAR} or key_file: PATH")
            case (.some, .some):
                throw keyFileNode!.error("\(what) has both key and key_file; keep one")
            case (let node?, nil):
                places["key"] = node.place
                keyText = try node.string("\(what).key")
            case (nil, let node?):
                places["key"] = node.place
                keySetting = "\(what).key_file"
                let path = JobConfig.resolve(
                    try node.string("\(what).key_file"), base: parentDirectory(of: node.file))
                guard let data = FileManager.default.contents(atPath: path),
                    let text = String(data: data, encoding: .utf8)
                else {
                    throw node.error("cannot read the key file \(path)")
                }
                keyText = text
            }
            guard let authorization = MasterKeyAuthorization(base64Key: keyText) else {
                // The key itself is not repeated: it may be a real secret with a typo.
                throw FeedArchiveError.badJobFile(
                    place: places["key"]!, message: "the account key is not base64 (\(keyText.count) characters)")
            }
            return Account(endpoint: endpoint, authorization: authorization, keySetting: keySetting, places: places)
        }
    }

    /// An error about a setting, at its place in the job file.
    func error(_ key: String, _ message: String) -> FeedArchiveError {
        .badJobFile(place: places[key] ?? "source.\(key)", message: message)
    }
}
