import FeedArchive
import Foundation

/// The container's identity and its live partition key ranges, read once and cached.
extension CosmosSource {
    func containerInfo() async throws -> ContainerInfo {
        if let info = state.withLock({ $0.info }) { return info }
        let account = try await client.get(path: "", resourceType: "", resourceLink: "")
        try check(account, what: "the database account")
        let collection = try await client.get(path: containerPath, resourceType: "colls", resourceLink: containerPath)
        try check(collection, what: "container \(settings.container) of database \(settings.database)")
        guard let accountObject = try? JSONSerialization.jsonObject(with: account.body) as? [String: Any],
            let collectionObject = try? JSONSerialization.jsonObject(with: collection.body) as? [String: Any],
            let rid = collectionObject["_rid"] as? String
        else {
            throw FeedArchiveError.sourceUnavailable(
                "\(settings.endpoint.absoluteString): the account or container answer is not JSON")
        }
        var path = settings.partitionKeyPath
        if path == nil, let key = collectionObject["partitionKey"] as? [String: Any],
            let paths = key["paths"] as? [String]
        {
            path = paths.first
        }
        let info = ContainerInfo(
            account: (accountObject["id"] as? String) ?? settings.endpoint.host ?? "?", rid: rid,
            keyPath: (path ?? "/id").split(separator: "/").map(String.init))
        state.withLock { $0.info = info }
        return info
    }

    /// The live partition key ranges, from the cache or `/pkranges` (gone parents dropped).
    func ranges(reload: Bool = false) async throws -> [PhysicalRange] {
        if !reload, let ranges = state.withLock({ $0.ranges }) { return ranges }
        var all: [[String: Any]] = []
        var continuation: String?
        repeat {
            var headers: [String: String] = [:]
            if let continuation { headers["x-ms-continuation"] = continuation }
            let response = try await client.get(
                path: containerPath + "/pkranges", resourceType: "pkranges", resourceLink: containerPath,
                headers: headers)
            try check(response, what: "the partition key ranges of \(containerPath)")
            guard let object = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any],
                let list = object["PartitionKeyRanges"] as? [[String: Any]]
            else {
                throw FeedArchiveError.sourceUnavailable(
                    "\(containerPath)/pkranges: the answer has no PartitionKeyRanges")
            }
            all += list
            continuation = response.headers["x-ms-continuation"]
        } while continuation != nil
        let gone = Set(all.flatMap { ($0["parents"] as? [String]) ?? [] })
        let live = all.compactMap { entry -> PhysicalRange? in
            guard let id = entry["id"] as? String, !gone.contains(id), let min = entry["minInclusive"] as? String,
                let max = entry["maxExclusive"] as? String
            else { return nil }
            return PhysicalRange(id: id, min: min, max: max)
        }.sorted { EPK.less($0.min, $1.min) }
        // The ranges must tile the key space; a snapshot taken mid-split may not: try again later.
        var expected = ""
        for range in live {
            guard range.min == expected else {
                throw FeedArchiveError.temporary(
                    "\(containerPath)/pkranges: the ranges do not tile the key space at \(expected.isEmpty ? "\"\"" : expected) (a split in progress?)"
                )
            }
            expected = range.max
        }
        guard expected == EPK.end, !live.isEmpty else {
            throw FeedArchiveError.temporary("\(containerPath)/pkranges: the ranges end at \(expected), not FF")
        }
        state.withLock { $0.ranges = live }
        return live
    }
}
