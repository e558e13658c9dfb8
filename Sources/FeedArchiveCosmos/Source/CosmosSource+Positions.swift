import FeedArchive
import Foundation

/// Tokens of the change feed: where a read starts (`resolve`), where it stops (`head`), and
/// which tokens this feed mode can continue.
extension CosmosSource {
    func makeToken(_ cursors: [String: String]) async throws -> ContinuationToken {
        ContinuationToken(
            kind: kind, source: try await identity().shortFingerprint, cursors: cursors,
            extra: ["mode": settings.mode.rawValue])
    }

    public func resolve(_ start: StartSpec) async throws -> ContinuationToken {
        switch start {
        case .beginning, .time:
            if settings.mode == .allVersionsAndDeletes {
                throw FeedArchiveError.usage(
                    "the all_versions_and_deletes change feed starts from now or from a token, not from \(start): the service keeps no history before a continuation"
                )
            }
            let state: FeedRangeCursor.Start
            if case .time(let date) = start {
                state = .time(Int64(date.timeIntervalSince1970))
            } else {
                state = .beginning
            }
            let live = try await ranges(reload: true)
            return try await makeToken(
                Dictionary(
                    uniqueKeysWithValues: live.map {
                        ($0.id, FeedRangeCursor(min: $0.min, max: $0.max, via: $0.id, start: state).description)
                    }))
        case .now:
            let live = try await ranges(reload: true)
            var cursors: [String: String] = [:]
            for range in live {
                let etag = try await nowEtag(range, partition: range.id)
                cursors[range.id] =
                    FeedRangeCursor(min: range.min, max: range.max, via: range.id, start: .etag(etag)).description
            }
            return try await makeToken(cursors)
        case .token(let text):
            let token = try ContinuationToken.decode(text)
            guard token.kind == kind else {
                throw FeedArchiveError.data(
                    path: nil, message: "the token is a \(token.kind) token; this job reads a cosmos change feed")
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
                hint:
                    "a change of mode is a new feed: start a new epoch with `feedarchive epoch JOB --from now --reason \"mode changed\"`"
            )
        }
        for (partition, cursor) in token.cursors where FeedRangeCursor(cursor) == nil {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "the token's cursor for feed range \(partition) ('\(cursor.prefix(60))') is not a cosmos feed range cursor"
            )
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
        let response = try await client.get(
            path: containerPath + "/docs", resourceType: "docs", resourceLink: containerPath, headers: headers)
        if response.status == 410 {
            throw FeedArchiveError.temporary(
                "range \(range.id) is gone (410 substatus \(response.substatus)) while reading its head")
        }
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
                        if let value = FeedRangeCursor.number(try await nowEtag(range, partition: partition)) {
                            best = Swift.max(best ?? value, value)
                        }
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

    /// The latest-version feed keeps only each document's current version: a past range cannot be
    /// read again as it was archived (backfill, `verify --against-source`).
    public func checkRetained(from token: ContinuationToken) async throws {
        try checkMode(token)
        if settings.mode == .latestVersion {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "the latest_version change feed holds only the current version of each document: a past range cannot be re-read as it was archived",
                hint:
                    "archive with mode: all_versions_and_deletes to be able to re-read ranges within the retention window"
            )
        }
    }
}
