import FeedArchive
import Foundation

/// Requests made ahead of the caller: each partition's chain of page requests, and the next
/// partition's first request while the one before it is read.
extension CosmosSource {
    /// One page request: the feed range, the cursor it reads after, its size and stop target.
    struct PageKey: Hashable {
        var partition: String
        var cursor: String
        var count: Int
        var head: String
    }

    /// What one change feed request found, before its body is turned into records.
    enum Fetched: Sendable {
        /// Items (200): the body, the cursor after them and the item count the service gave.
        case items(CosmosResponse, next: FeedRangeCursor, count: Int?)
        /// Nothing new (304, or 200 without items).
        case caughtUp
        case topology(TopologyChange)
    }

    /// The requests made ahead for one partition, oldest first. Each page's request is made
    /// as soon as the one before it came back full (its etag is all it needs), up to `depth`
    /// pages ahead of the caller, so the service answers while earlier pages are turned into
    /// records and compressed.
    struct Chain {
        var queue: [(key: PageKey, task: Task<Fetched, any Error>)] = []
        /// The chain stopped at its depth: the request it makes once the caller takes a page.
        var paused: PageKey?
        /// Bumped when the chain is dropped: answers of older requests start nothing more.
        var generation = 0
    }

    /// Pages a partition may have requested ahead of the caller (each up to max_item_count
    /// items), and all partitions together: a partition whose share of the time budget ended
    /// keeps its pages for the next pass, and with many ranges these would add up.
    static let depth = 4
    static let totalDepth = 8

    /// The page after a full one ending at `next`, unless the stop target is reached.
    func following(_ key: PageKey, _ next: FeedRangeCursor) -> PageKey? {
        guard let stop = stopTarget(key.head, for: next).lsn else {
            return PageKey(partition: key.partition, cursor: next.description, count: key.count, head: key.head)
        }
        guard (next.etagNumber ?? 0) < stop else { return nil }
        return PageKey(partition: key.partition, cursor: next.description, count: key.count, head: key.head)
    }

    /// Makes the request for `key` at the end of its partition's chain (state locked).
    func enqueue(_ key: PageKey, in state: inout State) {
        let generation = state.chains[key.partition, default: Chain()].generation
        let task = Task { try await self.fetchAhead(key, generation: generation) }
        state.chains[key.partition, default: Chain()].queue.append((key, task))
    }

    /// One request of a chain; a full page makes the request for the page after it (or leaves
    /// it for when the caller catches up, at the chain's depth).
    func fetchAhead(_ key: PageKey, generation: Int) async throws -> Fetched {
        guard let cursor = FeedRangeCursor(key.cursor) else {
            throw FeedArchiveError.data(
                path: nil, message: "the cursor of feed range \(key.partition) is not a cosmos cursor")
        }
        let fetched = try await fetch(partition: key.partition, cursor: cursor, count: key.count)
        if case .items(_, let next, let count?) = fetched, count >= key.count, let nextKey = following(key, next) {
            state.withLock { state in
                guard let chain = state.chains[key.partition], chain.generation == generation else { return }
                let queued = state.chains.values.reduce(0) { $0 + $1.queue.count }
                if chain.queue.count < Self.depth && queued < Self.totalDepth {
                    enqueue(nextKey, in: &state)
                } else {
                    state.chains[key.partition]!.paused = nextKey
                }
            }
        }
        return fetched
    }

    /// Starts the chain of the partition the run reads after `partition` (the runner reads
    /// them in name order), from its cursor in the run's token (state locked).
    func startNextPartition(after partition: String, count: Int, in state: inout State) {
        state.planned.insert(partition)
        if state.firstCount == nil { state.firstCount = count }
        guard let plan = state.plan,
            let next = plan.cursors.keys.sorted().first(where: { $0 > partition && !state.planned.contains($0) }),
            let cursorText = plan.cursors[next], let cursor = FeedRangeCursor(cursorText), let head = plan.heads[next]
        else { return }
        state.planned.insert(next)
        if let stop = stopTarget(head, for: cursor).lsn, let at = cursor.etagNumber, at >= stop { return }
        guard state.chains[next]?.queue.isEmpty ?? true else { return }
        enqueue(PageKey(partition: next, cursor: cursorText, count: state.firstCount ?? count, head: head), in: &state)
    }
}
