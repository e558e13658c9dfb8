import FeedArchive
import Foundation

extension CosmosSource {
    /// One change feed request for a feed range, with everything the protocol asks for.
    func fetch(partition: String, cursor: FeedRangeCursor, count: Int) async throws -> Fetched {
        var live = try await ranges()
        var reloaded = false
        while true {
            let range: PhysicalRange
            let byEPK: Bool
            switch try route(partition, cursor, live) {
            case .change(let change): return .topology(change)
            case .read(let target, let epk): (range, byEPK) = (target, epk)
            }
            var headers = modeHeaders()
            headers["x-ms-documentdb-partitionkeyrangeid"] = range.id
            headers["x-ms-max-item-count"] = String(count)
            if byEPK {
                headers["x-ms-read-key-type"] = "EffectivePartitionKeyRange"
                headers["x-ms-start-epk"] = cursor.min
                headers["x-ms-end-epk"] = cursor.max
            }
            switch cursor.start {
            case .beginning: break
            case .time(let seconds):
                headers["If-Modified-Since"] = MasterKeyAuthorization.httpDate(
                    Date(timeIntervalSince1970: Double(seconds)))
            case .etag(let etag): headers["If-None-Match"] = etag
            }
            let response = try await client.get(
                path: containerPath + "/docs", resourceType: "docs", resourceLink: containerPath, headers: headers)
            switch response.status {
            case 200:
                guard let etag = response.headers["etag"] else {
                    throw FeedArchiveError.sourceUnavailable(
                        "the change feed of range \(range.id) answered 200 without an etag")
                }
                var next = cursor
                next.start = .etag(etag)
                let items = response.headers["x-ms-item-count"].flatMap { Int($0) }
                if items == 0 { return .caughtUp }
                return .items(response, next: next, count: items)
            case 304:
                return .caughtUp
            case 410:
                // Split (1002, or 1007 while it completes) or merge: reload the ranges and route again.
                guard !reloaded else {
                    throw FeedArchiveError.temporary(
                        "range \(range.id) answered 410 substatus \(response.substatus) but is still listed in /pkranges (a split completing); will retry"
                    )
                }
                live = try await ranges(reload: true)
                reloaded = true
            case 400
            where settings.mode == .allVersionsAndDeletes && response.message.lowercased().contains("retention"):
                throw FeedArchiveError.data(
                    path: nil,
                    message:
                        "the all_versions_and_deletes change feed refused to continue feed range \(partition) from its checkpoint (HTTP 400: \(response.message)): the continuation is outside the retention window (continuous backup), so the changes in between can no longer be read",
                    hint:
                        "archive what is left from now on with `feedarchive epoch JOB --from now --reason \"all-versions retention window passed\"`; the lost span stays a known gap"
                )
            default:
                try check(response, what: "the change feed of range \(range.id)")
                throw FeedArchiveError.data(
                    path: nil, message: "the change feed of range \(range.id): unexpected HTTP \(response.status)")
            }
        }
    }
}
