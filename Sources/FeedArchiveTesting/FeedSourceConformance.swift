import FeedArchive
import Foundation

/// Drives a source's underlying feed for the conformance suite: each source's tests provide
/// one over a real database (or the in-memory feed).
public protocol ConformanceFeed {
    /// A new source object over the feed (a fresh connection each time).
    func makeSource() async throws -> any FeedSource
    /// Appends `count` changes to the feed (to partition 0 if the source has several).
    func append(_ count: Int) async throws
}

/// A contract violation found by the suite: which check, and what was seen.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public var check: String
    public var detail: String
    public var description: String { "conformance check '\(check)' failed: \(detail)" }
}

/// The one test suite every `FeedSource` passes (the way Litestream's `RunWithReplicaClient`
/// runs against every replica client). Framework-neutral: it throws on the first violation
/// and returns the names of the checks it ran.
public enum FeedSourceConformance {
    public static func run(_ feed: any ConformanceFeed) async throws -> [String] {
        var passed: [String] = []
        func require(_ condition: Bool, _ check: String, _ detail: @autoclosure () -> String) throws {
            if !condition { throw ConformanceFailure(check: check, detail: detail()) }
        }

        try await feed.append(25)
        let source = try await feed.makeSource()

        // Identity is stable across connections and tokens carry it.
        let identity = try await source.identity()
        let again = try await feed.makeSource().identity()
        try require(identity == again, "identity-stable", "\(identity.facts) != \(again.facts)")
        passed.append("identity-stable")

        // From the beginning to the head: every change once, positions strictly increasing,
        // envelopes valid, pages within their limit and ending on a cursor.
        let beginning = try await source.resolve(.beginning)
        try require(
            beginning.kind == source.kind, "token-kind", "token kind \(beginning.kind) for source \(source.kind)")
        try require(
            beginning.source == identity.shortFingerprint, "token-fingerprint",
            "token source \(beginning.source ?? "nil")")
        let all = try await readAll(source, from: beginning, pageSize: 7, check: require)
        try require(
            all.records.count == 25, "read-all", "read \(all.records.count) changes from the beginning, appended 25")
        passed += [
            "token-kind", "token-fingerprint", "read-all", "positions-increase", "envelope-valid", "page-limit",
            "page-ends-on-cursor",
        ]

        // Token text round trip, and resolve(.token) accepts what it printed.
        let decoded = try ContinuationToken.decode(all.token.encoded)
        try require(decoded == all.token, "token-round-trip", "\(decoded) != \(all.token)")
        let resolved = try await source.resolve(.token(all.token.encoded))
        try require(resolved == all.token, "token-resolve", "resolve(token) gave \(resolved)")
        passed += ["token-round-trip", "token-resolve"]

        // Resuming from a cursor in the middle neither skips nor repeats a change.
        let cut = (11..<all.records.count).first { all.records[$0].cursor != nil } ?? 11
        let middle = all.cursorsAfter[cut]
        let resumed = try await readAll(
            source, from: beginning.advancing(middle.0, to: middle.1), pageSize: 5, check: require)
        let expected = Array(all.records[(cut + 1)...].map(\.position))
        try require(
            resumed.records.map(\.position) == expected, "resume-exact",
            "resumed \(resumed.records.count) changes, expected \(expected.count)")
        passed.append("resume-exact")

        // The head is a stop target: changes appended after it was taken wait for the next run.
        let head = try await source.head(for: all.token)
        try await feed.append(4)
        var beyond = 0
        for (partition, cursor) in all.token.cursors {
            let page = try await source.readPage(
                partition: partition, after: cursor, through: head[partition] ?? cursor, maxRecords: 100)
            beyond += page.records.count
        }
        try require(
            beyond == 0, "head-is-stop-target", "read \(beyond) changes past the head taken before they were appended")
        passed.append("head-is-stop-target")

        // Lag counts what is left; the next read returns exactly the new changes.
        if let lag = try await source.lag(from: all.token) {
            try require(lag == 4, "lag", "lag \(lag) with 4 changes left")
            passed.append("lag")
        }
        let rest = try await readAll(source, from: all.token, pageSize: 100, check: require)
        try require(rest.records.count == 4, "read-new", "read \(rest.records.count) new changes, appended 4")
        try require(
            rest.records.first!.position > all.records.last!.position, "read-new-order",
            "new changes do not follow the old")
        passed += ["read-new", "read-new-order"]

        // `now` starts after everything that exists; continuity holds for a valid token.
        let now = try await source.resolve(.now)
        let fromNow = try await readAll(source, from: now, pageSize: 100, check: require)
        try require(
            fromNow.records.isEmpty, "start-now", "resolve(.now) then read gave \(fromNow.records.count) old changes")
        try await source.checkContinuity(from: rest.token)
        try await source.acknowledge(rest.token)
        passed += ["start-now", "continuity", "acknowledge"]

        // A token of another kind is refused.
        let foreign = ContinuationToken(
            kind: source.kind == "other" ? "another" : "other", source: nil, cursors: ["0": "1"])
        do {
            _ = try await source.resolve(.token(foreign.encoded))
            throw ConformanceFailure(check: "foreign-token", detail: "a token of kind \(foreign.kind) was accepted")
        } catch let error as FeedArchiveError {
            try require(error.exitCode == 65, "foreign-token", "refused with exit \(error.exitCode), expected 65")
        }
        passed.append("foreign-token")
        await source.close()
        return passed
    }

    struct ReadResult {
        var records: [FeedRecord] = []
        var token: ContinuationToken
        /// After record i: the partition and cursor a run would checkpoint.
        var cursorsAfter: [(String, String)] = []
    }

    static func readAll(
        _ source: any FeedSource, from token: ContinuationToken, pageSize: Int,
        check: (Bool, String, @autoclosure () -> String) throws -> Void
    ) async throws -> ReadResult {
        var result = ReadResult(token: token)
        let head = try await source.head(for: token)
        for partition in token.cursors.keys.sorted() {
            guard var cursor = token.cursors[partition], let stop = head[partition] else { continue }
            while true {
                let page = try await source.readPage(
                    partition: partition, after: cursor, through: stop, maxRecords: pageSize)
                if page.records.isEmpty { break }
                try check(
                    page.next != nil, "page-ends-on-cursor",
                    "a page ended inside a group at \(page.records.last!.position) without a resume cursor")
                let groups = page.records.filter { $0.cursor != nil }.count
                try check(
                    groups <= pageSize, "page-limit",
                    "a page of \(page.records.count) changes (\(groups) cursor points) for a limit of \(pageSize)")
                var lastCursor = cursor
                for record in page.records {
                    if let previous = result.records.last {
                        try check(
                            previous.position < record.position, "positions-increase",
                            "\(record.position) after \(previous.position)")
                    }
                    try check(
                        JSONText.isValid(record.line), "envelope-valid", "invalid JSON line at \(record.position)")
                    let text = String(decoding: record.line, as: UTF8.self)
                    try check(
                        text.hasPrefix(#"{"pos":"\#(record.position.rawValue)","part":"#), "envelope-valid",
                        "envelope at \(record.position) does not start with its position: \(text.prefix(60))")
                    // The fields in the order `Envelope.fields` gives, each once at the top level.
                    var searchFrom = text.startIndex
                    for field in Envelope.fields {
                        let found = text.range(of: "\"\(field)\":", range: searchFrom..<text.endIndex)
                        try check(
                            found != nil, "envelope-valid",
                            "envelope at \(record.position) lacks \(field), or has it out of order")
                        searchFrom = found?.upperBound ?? searchFrom
                    }
                    let op = text.range(of: #","op":""#).map { text.utf8[$0.upperBound] }
                    try check(
                        op.flatMap(ChangeOp.init(rawValue:)) != nil, "envelope-valid",
                        "envelope at \(record.position) has no known op")
                    result.records.append(record)
                    lastCursor = record.cursor ?? lastCursor
                    result.cursorsAfter.append((partition, lastCursor))
                }
                cursor = page.next!
                if let last = page.records.last?.cursor { result.token = result.token.advancing(partition, to: last) }
            }
        }
        return result
    }
}

/// The in-memory feed as a `ConformanceFeed`, so the suite itself is tested.
public final class InMemoryConformanceFeed: ConformanceFeed {
    public let source = InMemorySource()
    public init() {}
    public func makeSource() async throws -> any FeedSource { source }
    /// Appends exactly `count` changes, some in groups of two.
    public func append(_ count: Int) async throws {
        var left = count
        var index: Int64 = 0
        while left > 0 {
            let size = left >= 2 && index % 3 == 0 ? 2 : 1
            source.append(count: size, timestamp: 1_795_000_000_000_000 + index * 1_000_000)
            left -= size
            index += 1
        }
    }
}
