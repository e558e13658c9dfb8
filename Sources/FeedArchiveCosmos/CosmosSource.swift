import FeedArchive
import Foundation
import Synchronization

/// Azure Cosmos DB's change feed over the REST API (no Swift SDK exists). Partitions are feed
/// ranges: one per partition key range when the job starts; a split gives the children their
/// own partitions, a merge keeps the feed range and reads it through the merged range by EPK.
/// Each partition's cursor is a `FeedRangeCursor`; the token records the feed mode.
public final class CosmosSource: FeedSource, Sendable {
    public let kind = "cosmos"
    public let settings: CosmosSourceSettings
    let client: CosmosRESTClient

    /// A live partition key range from `/pkranges`.
    struct PhysicalRange: Equatable, Sendable {
        var id: String
        var min: String
        var max: String
    }

    struct ContainerInfo: Sendable {
        var account: String
        var rid: String
        var keyPath: [String]
    }

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

    private struct State {
        var info: ContainerInfo?
        var ranges: [PhysicalRange]?
        var chains: [String: Chain] = [:]
        /// The run's partitions, cursors and heads (from `head(for:)`): the next partition's
        /// chain starts while the one before it is read.
        var plan: (cursors: [String: String], heads: [String: String])?
        var planned: Set<String> = []
        var firstCount: Int?
    }
    private let state = Mutex(State())

    /// `proxy`: the HTTP proxy to reach the account through (`make` takes it from the
    /// environment, as curl does: `https_proxy`, `no_proxy`, …).
    init(settings: CosmosSourceSettings, proxy: HTTPProxy?) {
        self.settings = settings
        self.client = CosmosRESTClient(settings: settings, proxy: proxy)
    }

    public convenience init(settings: CosmosSourceSettings) {
        self.init(settings: settings, proxy: nil)
    }

    /// The source for a job file; refuses start positions the feed mode cannot serve.
    public static func make(job: JobConfig) throws -> CosmosSource {
        let settings = try CosmosSourceSettings.parse(job.sourceSettings)
        if settings.mode == .allVersionsAndDeletes {
            switch job.start {
            case .beginning, .time:
                throw FeedArchiveError.badJobFile(
                    place: job.file,
                    message: "start: \(job.start) is not possible in all_versions_and_deletes mode: that feed starts from now or from a token (set start: now)")
            default: break
            }
        }
        let proxy: HTTPProxy?
        do {
            proxy = try HTTPProxy.resolve(for: settings.endpoint, environment: ProcessInfo.processInfo.environment)
        } catch let invalid as HTTPProxy.Invalid {
            throw FeedArchiveError.badJobFile(place: "\(invalid.variable) (environment, for \(job.file))", message: invalid.message)
        }
        if let bundle = ProcessInfo.processInfo.environment["SSL_CERT_FILE"], !bundle.isEmpty, settings.endpoint.scheme == "https",
            !FileManager.default.isReadableFile(atPath: bundle)
        {
            throw FeedArchiveError.badJobFile(place: "SSL_CERT_FILE (environment, for \(job.file))", message: "\(bundle) is not a readable file of PEM certificates")
        }
        return CosmosSource(settings: settings, proxy: proxy)
    }

    var containerPath: String { "dbs/\(settings.database)/colls/\(settings.container)" }

    // MARK: - Container and ranges

    func containerInfo() async throws -> ContainerInfo {
        if let info = state.withLock({ $0.info }) { return info }
        let account = try await client.get(path: "", resourceType: "", resourceLink: "")
        try check(account, what: "the database account")
        let collection = try await client.get(path: containerPath, resourceType: "colls", resourceLink: containerPath)
        try check(collection, what: "container \(settings.container) of database \(settings.database)")
        guard let accountObject = try? JSONSerialization.jsonObject(with: account.body) as? [String: Any],
            let collectionObject = try? JSONSerialization.jsonObject(with: collection.body) as? [String: Any],
            let rid = collectionObject["_rid"] as? String
        else { throw FeedArchiveError.sourceUnavailable("\(settings.endpoint.absoluteString): the account or container answer is not JSON") }
        var path = settings.partitionKeyPath
        if path == nil, let key = collectionObject["partitionKey"] as? [String: Any], let paths = key["paths"] as? [String] {
            path = paths.first
        }
        let info = ContainerInfo(
            account: (accountObject["id"] as? String) ?? settings.endpoint.host ?? "?", rid: rid,
            keyPath: (path ?? "/id").split(separator: "/").map(String.init))
        state.withLock { $0.info = info }
        return info
    }

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

    /// The live partition key ranges, from the cache or `/pkranges` (gone parents dropped).
    func ranges(reload: Bool = false) async throws -> [PhysicalRange] {
        if !reload, let ranges = state.withLock({ $0.ranges }) { return ranges }
        var all: [[String: Any]] = []
        var continuation: String?
        repeat {
            var headers: [String: String] = [:]
            if let continuation { headers["x-ms-continuation"] = continuation }
            let response = try await client.get(path: containerPath + "/pkranges", resourceType: "pkranges", resourceLink: containerPath, headers: headers)
            try check(response, what: "the partition key ranges of \(containerPath)")
            guard let object = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any],
                let list = object["PartitionKeyRanges"] as? [[String: Any]]
            else { throw FeedArchiveError.sourceUnavailable("\(containerPath)/pkranges: the answer has no PartitionKeyRanges") }
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
                throw FeedArchiveError.temporary("\(containerPath)/pkranges: the ranges do not tile the key space at \(expected.isEmpty ? "\"\"" : expected) (a split in progress?)")
            }
            expected = range.max
        }
        guard expected == EPK.end, !live.isEmpty else {
            throw FeedArchiveError.temporary("\(containerPath)/pkranges: the ranges end at \(expected), not FF")
        }
        state.withLock { $0.ranges = live }
        return live
    }

    // MARK: - FeedSource

    public func identity() async throws -> SourceIdentity {
        let info = try await containerInfo()
        return SourceIdentity(facts: [
            "account": info.account, "database": settings.database, "container": settings.container, "container_rid": info.rid,
        ])
    }

    private func makeToken(_ cursors: [String: String]) async throws -> ContinuationToken {
        ContinuationToken(kind: kind, source: try await identity().shortFingerprint, cursors: cursors, extra: ["mode": settings.mode.rawValue])
    }

    public func resolve(_ start: StartSpec) async throws -> ContinuationToken {
        switch start {
        case .beginning, .time:
            if settings.mode == .allVersionsAndDeletes {
                throw FeedArchiveError.usage(
                    "the all_versions_and_deletes change feed starts from now or from a token, not from \(start): the service keeps no history before a continuation")
            }
            let state: FeedRangeCursor.Start
            if case .time(let date) = start { state = .time(Int64(date.timeIntervalSince1970)) } else { state = .beginning }
            let live = try await ranges(reload: true)
            return try await makeToken(
                Dictionary(uniqueKeysWithValues: live.map { ($0.id, FeedRangeCursor(min: $0.min, max: $0.max, via: $0.id, start: state).description) }))
        case .now:
            let live = try await ranges(reload: true)
            var cursors: [String: String] = [:]
            for range in live {
                let etag = try await nowEtag(range, partition: range.id)
                cursors[range.id] = FeedRangeCursor(min: range.min, max: range.max, via: range.id, start: .etag(etag)).description
            }
            return try await makeToken(cursors)
        case .token(let text):
            let token = try ContinuationToken.decode(text)
            guard token.kind == kind else {
                throw FeedArchiveError.data(path: nil, message: "the token is a \(token.kind) token; this job reads a cosmos change feed")
            }
            try token.requireSource(try await identity().shortFingerprint, other: "another container")
            try checkMode(token)
            return token
        }
    }

    /// A token of the other feed mode would be misread: refuse it.
    func checkMode(_ token: ContinuationToken) throws {
        let mode = token.extra["mode"] ?? "?"
        guard mode == settings.mode.rawValue else {
            throw FeedArchiveError.data(
                path: nil,
                message: "the token was made for the \(mode) change feed; this job reads \(settings.mode.rawValue)",
                hint: "a change of mode is a new feed: start a new epoch with `feedarchive epoch JOB --from now --reason \"mode changed\"`")
        }
        for (partition, cursor) in token.cursors where FeedRangeCursor(cursor) == nil {
            throw FeedArchiveError.data(path: nil, message: "the token's cursor for feed range \(partition) ('\(cursor.prefix(60))') is not a cosmos feed range cursor")
        }
    }

    public func checkContinuity(from token: ContinuationToken) async throws {
        try checkMode(token)
    }

    /// The etag the service gives for "now" on one range (`If-None-Match: *`).
    func nowEtag(_ range: PhysicalRange, partition: String) async throws -> String {
        var headers = modeHeaders()
        headers["x-ms-documentdb-partitionkeyrangeid"] = range.id
        headers["If-None-Match"] = "*"
        headers["x-ms-max-item-count"] = "1"
        let response = try await client.get(path: containerPath + "/docs", resourceType: "docs", resourceLink: containerPath, headers: headers)
        if response.status == 410 { throw FeedArchiveError.temporary("range \(range.id) is gone (410 substatus \(response.substatus)) while reading its head") }
        try check(response, what: "the change feed head of range \(range.id)")
        guard let etag = response.headers["etag"] else {
            throw FeedArchiveError.sourceUnavailable("the change feed of range \(range.id) answered without an etag")
        }
        return etag
    }

    public func head(for token: ContinuationToken) async throws -> [String: String] {
        var heads: [String: String] = [:]
        var live = try await ranges()
        for (partition, text) in token.cursors.sorted(by: { $0.key < $1.key }) {
            guard let cursor = FeedRangeCursor(text) else { continue }
            var best: Int64?
            for range in live where EPK.less(range.min, cursor.max) && EPK.less(cursor.min, range.max) {
                // A range that keeps failing gets no head (it is read until 304, or set aside by
                // the run when its reads fail too): it must not stop the other ranges' run.
                for attempt in 0..<4 {
                    do {
                        if let value = FeedRangeCursor.number(try await nowEtag(range, partition: partition)) { best = Swift.max(best ?? value, value) }
                        break
                    } catch let error as FeedArchiveError where RetryPolicy.isTransient(error) {
                        if error.description.contains("is gone") { live = try await ranges(reload: true) }
                        try? await Task.sleep(nanoseconds: UInt64(50_000_000 << attempt))
                    }
                }
            }
            // Without numeric etags there is no head to compare with: read until the service says 304.
            heads[partition] = best.map(String.init) ?? ""
        }
        state.withLock { state in
            state.plan = (token.cursors, heads)
            state.planned = []
            state.firstCount = nil
        }
        return heads
    }

    public func lag(from token: ContinuationToken) async throws -> Int64? { nil }

    /// Reads ahead are left to finish (see `readPage`: no cancelling); the client starts no
    /// request after this.
    public func close() async {
        state.withLock { $0.chains = [:] }
        client.close()
    }

    // MARK: - Reading

    func modeHeaders() -> [String: String] {
        switch settings.mode {
        case .latestVersion: return ["A-IM": "Incremental Feed"]
        case .allVersionsAndDeletes:
            return ["A-IM": "Full-Fidelity Feed", "x-ms-cosmos-changefeed-wire-format-version": "2021-09-15"]
        }
    }

    public func readPage(partition: String, after cursorText: String, through head: String, maxRecords: Int) async throws -> FeedPage {
        guard let cursor = FeedRangeCursor(cursorText) else {
            throw FeedArchiveError.data(path: nil, message: "the cursor of feed range \(partition) ('\(cursorText.prefix(60))') is not a cosmos cursor")
        }
        // The head is an LSN (a run's stop target) or a cursor of this feed range (a backfill's
        // `until`, a blob's end for `verify --against-source`): then pages end exactly on it.
        let (stop, stopCursor) = stopTarget(head, for: cursor)
        if let at = cursor.etagNumber, let stop, at >= stop { return FeedPage(records: []) }
        let key = PageKey(partition: partition, cursor: cursorText, count: Swift.min(maxRecords, settings.maxItemCount), head: head)
        // The page's request from its partition's chain, or a new chain that starts with it.
        // A request that is not this page is dropped, not cancelled: cancelling a task that
        // waits in URLSession can deadlock FoundationNetworking on Linux (the task's cancel
        // handler waits for the session's queue while the session resumes the task), and a run
        // hung that way. The request finishes on its own; its answer is ignored.
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
        let envelope = ChangeFeedEnvelope(partition: partition, mode: settings.mode, keyPath: try await containerInfo().keyPath)
        var page = FeedPage(records: try envelope.records(body: response.body, cursorAfter: next.description))
        if page.records.isEmpty { return FeedPage(records: []) }
        if let stopCursor, let stop, let last = page.records.last, lsn(of: last) > stop {
            page.records.removeAll { lsn(of: $0) > stop }
            if !page.records.isEmpty { page.records[page.records.count - 1].cursor = stopCursor.description }
            return page
        }
        // Without an item count header, whether the page was full is known only now.
        if response.headers["x-ms-item-count"] == nil, page.records.count >= key.count, let following = following(key, next) {
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

    /// The page after a full one ending at `next`, unless the stop target is reached.
    private func following(_ key: PageKey, _ next: FeedRangeCursor) -> PageKey? {
        guard let stop = stopTarget(key.head, for: next).lsn else { return PageKey(partition: key.partition, cursor: next.description, count: key.count, head: key.head) }
        guard (next.etagNumber ?? 0) < stop else { return nil }
        return PageKey(partition: key.partition, cursor: next.description, count: key.count, head: key.head)
    }

    /// Makes the request for `key` at the end of its partition's chain (state locked).
    private func enqueue(_ key: PageKey, in state: inout State) {
        let generation = state.chains[key.partition, default: Chain()].generation
        let task = Task { try await self.fetchAhead(key, generation: generation) }
        state.chains[key.partition, default: Chain()].queue.append((key, task))
    }

    /// One request of a chain; a full page makes the request for the page after it (or leaves
    /// it for when the caller catches up, at the chain's depth).
    private func fetchAhead(_ key: PageKey, generation: Int) async throws -> Fetched {
        guard let cursor = FeedRangeCursor(key.cursor) else {
            throw FeedArchiveError.data(path: nil, message: "the cursor of feed range \(key.partition) is not a cosmos cursor")
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
    private func startNextPartition(after partition: String, count: Int, in state: inout State) {
        state.planned.insert(partition)
        if state.firstCount == nil { state.firstCount = count }
        guard let plan = state.plan, let next = plan.cursors.keys.sorted().first(where: { $0 > partition && !state.planned.contains($0) }),
            let cursorText = plan.cursors[next], let cursor = FeedRangeCursor(cursorText), let head = plan.heads[next]
        else { return }
        state.planned.insert(next)
        if let stop = stopTarget(head, for: cursor).lsn, let at = cursor.etagNumber, at >= stop { return }
        guard state.chains[next]?.queue.isEmpty ?? true else { return }
        enqueue(PageKey(partition: next, cursor: cursorText, count: state.firstCount ?? count, head: head), in: &state)
    }

    /// The `_lsn` part of a record's position.
    private func lsn(of record: FeedRecord) -> Int64 { Int64(record.position.rawValue.prefix(20)) ?? 0 }

    /// The latest-version feed keeps only each document's current version: a past range cannot be
    /// read again as it was archived (backfill, `verify --against-source`).
    public func checkRetained(from token: ContinuationToken) async throws {
        try checkMode(token)
        if settings.mode == .latestVersion {
            throw FeedArchiveError.data(
                path: nil,
                message: "the latest_version change feed holds only the current version of each document: a past range cannot be re-read as it was archived",
                hint: "archive with mode: all_versions_and_deletes to be able to re-read ranges within the retention window")
        }
    }

    /// What a feed range is read through now.
    enum Route {
        /// Read from this range; `byEPK` when the feed range is only part of it (after a merge).
        case read(PhysicalRange, byEPK: Bool)
        case change(TopologyChange)
    }

    func route(_ partition: String, _ cursor: FeedRangeCursor, _ live: [PhysicalRange]) throws -> Route {
        let overlapping = live.filter { EPK.less($0.min, cursor.max) && EPK.less(cursor.min, $0.max) }
        guard !overlapping.isEmpty else {
            throw FeedArchiveError.temporary("no partition key range covers feed range \(partition) [\(cursor.min), \(cursor.max))")
        }
        let describe = { (range: PhysicalRange) in "\(range.id) [\(range.min.isEmpty ? "\"\"" : range.min), \(range.max))" }
        let feedRange = "feed range \(partition) [\(cursor.min.isEmpty ? "\"\"" : cursor.min), \(cursor.max))"
        if overlapping.count == 1, cursor.isInside(overlapping[0].min, overlapping[0].max) {
            let range = overlapping[0]
            let exact = range.min == cursor.min && range.max == cursor.max
            if range.id == cursor.via { return .read(range, byEPK: !exact) }
            var next = cursor
            next.via = range.id
            if exact {
                return .change(
                    TopologyChange(
                        kind: .split, ended: [], cursors: [partition: next.description],
                        reason: "\(feedRange), read through range \(cursor.via), is now exactly range \(describe(range)) after a split"))
            }
            return .change(
                TopologyChange(
                    kind: .merge, ended: [], cursors: [partition: next.description],
                    reason: "\(feedRange), read through range \(cursor.via), was merged into range \(describe(range)); it is read through it by EPK range"))
        }
        var cursors: [String: String] = [:]
        var names: [String] = []
        for range in overlapping {
            let lower = EPK.maximum(range.min, cursor.min)
            let upper = EPK.minimum(range.max, cursor.max)
            let name = lower == range.min && upper == range.max ? range.id : "\(partition)-\(range.id)"
            cursors[name] = FeedRangeCursor(min: lower, max: upper, via: range.id, start: cursor.start).description
            names.append(name)
        }
        return .change(
            TopologyChange(
                kind: .split, ended: [partition], cursors: cursors,
                reason: "\(feedRange) split into \(overlapping.map(describe).joined(separator: ", ")); the children start from its continuation"))
    }

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
            case .time(let seconds): headers["If-Modified-Since"] = MasterKeyAuthorization.httpDate(Date(timeIntervalSince1970: Double(seconds)))
            case .etag(let etag): headers["If-None-Match"] = etag
            }
            let response = try await client.get(path: containerPath + "/docs", resourceType: "docs", resourceLink: containerPath, headers: headers)
            switch response.status {
            case 200:
                guard let etag = response.headers["etag"] else {
                    throw FeedArchiveError.sourceUnavailable("the change feed of range \(range.id) answered 200 without an etag")
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
                        "range \(range.id) answered 410 substatus \(response.substatus) but is still listed in /pkranges (a split completing); will retry")
                }
                live = try await ranges(reload: true)
                reloaded = true
            case 400 where settings.mode == .allVersionsAndDeletes && response.message.lowercased().contains("retention"):
                throw FeedArchiveError.data(
                    path: nil,
                    message: "the all_versions_and_deletes change feed refused to continue feed range \(partition) from its checkpoint (HTTP 400: \(response.message)): the continuation is outside the retention window (continuous backup), so the changes in between can no longer be read",
                    hint: "archive what is left from now on with `feedarchive epoch JOB --from now --reason \"all-versions retention window passed\"`; the lost span stays a known gap")
            default:
                try check(response, what: "the change feed of range \(range.id)")
                throw FeedArchiveError.data(path: nil, message: "the change feed of range \(range.id): unexpected HTTP \(response.status)")
            }
        }
    }
}
