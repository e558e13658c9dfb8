import FeedArchive
import Foundation

/// Pages of one feed range, from the requests its read-ahead chain made.
extension CosmosSource {
    func modeHeaders() -> [String: String] {
        switch settings.mode {
        case .latestVersion: return ["A-IM": "Incremental Feed"]
        case .allVersionsAndDeletes:
            return ["A-IM": "Full-Fidelity Feed", "x-ms-cosmos-changefeed-wire-format-version": "2021-09-15"]
        }
    }

    public func readPage(partition: String, after cursorText: String, through head: String, maxRecords: Int)
        async throws -> FeedPage
    {
        guard let cursor = FeedRangeCursor(cursorText) else {
            throw FeedArchiveError.data(
                path: nil,
                message: "the cursor of feed range \(partition) ('\(cursorText.prefix(60))') is not a cosmos cursor")
        }
        // The head is an LSN (a run's stop target) or a cursor of this feed range (a backfill's
        // `until`, a blob's end for `verify --against-source`): then pages end exactly on it.
        let (stop, stopCursor) = stopTarget(head, for: cursor)
        if let at = cursor.etagNumber, let stop, at >= stop { return FeedPage(records: []) }
        let key = PageKey(
            partition: partition, cursor: cursorText, count: Swift.min(maxRecords, settings.maxItemCount), head: head)
        // The page's request from its partition's chain, or a new chain that starts with it.
        // A request that is not this page is dropped, not cancelled: an exchange in flight
        // cannot be taken back from its connection (the client's futures do not observe
        // cancellation), so it finishes on its own and its answer is ignored.
        let request = state.withLock { state -> Task<Fetched, any Error> in
            var chain = state.chains[partition] ?? Chain()
            if chain.queue.first?.key != key {
                chain = Chain(generation: chain.generation + 1)
                state.chains[partition] = chain
                enqueue(key, in: &state)
            }
            let task = state.chains[partition]!.queue.removeFirst().task
            if let paused = state.chains[partition]!.paused {
                state.chains[partition]!.paused = nil
                enqueue(paused, in: &state)
            }
            startNextPartition(after: partition, count: key.count, in: &state)
            return task
        }
        let response: CosmosResponse
        let next: FeedRangeCursor
        switch try await request.value {
        case .topology(let change):
            return FeedPage(topology: change)
        case .caughtUp:
            return FeedPage(records: [])
        case .items(let body, let after, _):
            (response, next) = (body, after)
        }
        let envelope = ChangeFeedEnvelope(
            partition: partition, mode: settings.mode, keyPath: try await containerInfo().keyPath)
        var page = FeedPage(
            records: try envelope.records(body: response.body, cursorAfter: next.description, floor: cursor.etagNumber))
        if page.records.isEmpty { return FeedPage(records: []) }
        if let stopCursor, let stop, let last = page.records.last, lsn(of: last) > stop {
            page.records.removeAll { lsn(of: $0) > stop }
            if !page.records.isEmpty { page.records[page.records.count - 1].cursor = stopCursor.description }
            return page
        }
        // Without an item count header, whether the page was full is known only now.
        if response.headers["x-ms-item-count"] == nil, page.records.count >= key.count,
            let following = following(key, next)
        {
            state.withLock { state in
                if state.chains[partition]?.queue.isEmpty ?? true { enqueue(following, in: &state) }
            }
        }
        return page
    }

    /// The stop target of a head: an LSN (a run's head), or a cursor of this feed range (a
    /// backfill's `until`, a blob's end for `verify --against-source`): pages end exactly on it.
    func stopTarget(_ head: String, for cursor: FeedRangeCursor) -> (lsn: Int64?, cursor: FeedRangeCursor?) {
        let stopCursor = FeedRangeCursor(head).flatMap { $0.min == cursor.min && $0.max == cursor.max ? $0 : nil }
        return (Int64(head) ?? stopCursor?.etagNumber, stopCursor)
    }

    /// The `_lsn` part of a record's position.
    func lsn(of record: FeedRecord) -> Int64 { Int64(record.position.rawValue.prefix(20)) ?? 0 }
}
