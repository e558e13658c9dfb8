import FeedArchive
import Foundation
import Synchronization

/// A change feed held in memory: partitions, commit times, and groups of changes that share
/// one source position (like a PostgreSQL transaction) and must not be split across blobs.
/// It lets the core's batching and commit protocol be tested without any database, and
/// can fail chosen reads to test retries and error paths.
public final class InMemorySource: FeedSource, Sendable {
    /// One change of the in-memory feed.
    public struct Change: Sendable, Equatable {
        public var group: Int64
        public var index: Int
        public var timestamp: Int64?
        public var document: String
        public var pathValue: String?
    }

    private struct State {
        var partitions: [String: [Change]] = [:]
        var failReadsRemaining = 0
        var reads = 0
        var acknowledged: ContinuationToken?
        var identityFacts: [String: String]
        /// Split partitions and their children: a read past the parent's last change reports the split.
        var splits: [String: [String]] = [:]
        var onRead: (@Sendable () -> Void)?
    }

    public let kind = "memory"
    private let state: Mutex<State>

    public init(partitions: [String] = ["0"], name: String = "memory-feed") {
        var initial = State(identityFacts: ["name": name])
        for partition in partitions { initial.partitions[partition] = [] }
        state = Mutex(initial)
    }

    /// Appends one group (transaction) of `count` changes to a partition; returns its group number.
    @discardableResult
    public func append(
        partition: String = "0", count: Int = 1, timestamp: Int64? = nil, pathValue: String? = nil,
        document: ((Int) -> String)? = nil
    ) -> Int64 {
        state.withLock { state in
            var changes = state.partitions[partition] ?? []
            let group = (changes.last?.group ?? 0) + 1
            for index in 0..<count {
                let text = document?(index) ?? #"{"group":\#(group),"index":\#(index)}"#
                changes.append(
                    Change(group: group, index: index, timestamp: timestamp, document: text, pathValue: pathValue))
            }
            state.partitions[partition] = changes
            return group
        }
    }

    /// Every change of a partition, in feed order.
    public func changes(partition: String = "0") -> [Change] { state.withLock { $0.partitions[partition] ?? [] } }

    /// The next `count` page reads throw a source-unavailable error.
    public func failNextReads(_ count: Int) { state.withLock { $0.failReadsRemaining = count } }

    /// Pretends the feed now comes from another place (identity check).
    public func changeIdentity(_ name: String) { state.withLock { $0.identityFacts = ["name": name] } }

    /// Splits a partition the way a Cosmos feed range splits: once a reader has everything the
    /// parent holds, its next read reports the split, and new changes go to the children.
    public func split(_ partition: String, into children: [String]) {
        state.withLock { state in
            state.splits[partition] = children
            for child in children { state.partitions[child] = state.partitions[child] ?? [] }
        }
    }

    /// Drops the newest changes (a sequence going backwards).
    public func truncate(partition: String = "0", keeping count: Int) {
        state.withLock { $0.partitions[partition] = Array(($0.partitions[partition] ?? []).prefix(count)) }
    }

    public var lastAcknowledged: ContinuationToken? { state.withLock { $0.acknowledged } }
    /// Called at the start of every page read (on the reading task), for tests.
    public var onRead: (@Sendable () -> Void)? {
        get { state.withLock { $0.onRead } }
        set { state.withLock { $0.onRead = newValue } }
    }
    public var readCount: Int { state.withLock { $0.reads } }

    public static func position(group: Int64, index: Int) -> Position {
        Position(zeroPadded(UInt64(group), width: 20) + "-" + zeroPadded(UInt64(index), width: 8))!
    }

    public func identity() async throws -> SourceIdentity {
        SourceIdentity(facts: state.withLock { $0.identityFacts })
    }

    public func resolve(_ start: StartSpec) async throws -> ContinuationToken {
        let fingerprint = try await identity().shortFingerprint
        switch start {
        case .beginning:
            let cursors = state.withLock { state in
                Dictionary(uniqueKeysWithValues: state.partitions.keys.map { ($0, "0") })
            }
            return ContinuationToken(kind: kind, source: fingerprint, cursors: cursors)
        case .now:
            let cursors = state.withLock { state in
                Dictionary(uniqueKeysWithValues: state.partitions.map { ($0.key, String($0.value.last?.group ?? 0)) })
            }
            return ContinuationToken(kind: kind, source: fingerprint, cursors: cursors)
        case .time(let date):
            let micros = Int64(date.timeIntervalSince1970 * 1_000_000)
            let cursors = state.withLock { state in
                Dictionary(
                    uniqueKeysWithValues: state.partitions.map { partition, changes in
                        let first = changes.first { ($0.timestamp ?? .max) >= micros }
                        return (partition, String((first?.group ?? (changes.last?.group ?? 0) + 1) - 1))
                    })
            }
            return ContinuationToken(kind: kind, source: fingerprint, cursors: cursors)
        case .token(let text):
            let token = try ContinuationToken.decode(text)
            guard token.kind == kind else { throw FeedArchiveError.data(path: nil, message: "not a memory token") }
            return token
        }
    }

    public func checkContinuity(from token: ContinuationToken) async throws {
        for (partition, cursor) in token.cursors {
            let last = state.withLock { $0.partitions[partition]?.last?.group ?? 0 }
            if let value = Int64(cursor), value > last {
                throw FeedArchiveError.data(
                    path: nil,
                    message: "memory feed partition \(partition) went backwards: cursor \(value), last group \(last)")
            }
        }
    }

    public func head(for token: ContinuationToken) async throws -> [String: String] {
        state.withLock { state in
            Dictionary(uniqueKeysWithValues: state.partitions.map { ($0.key, String($0.value.last?.group ?? 0)) })
        }
    }

    /// Whole groups only: a page ends where a group ends, even past `maxRecords` for a big group.
    public func readPage(partition: String, after cursor: String, through head: String, maxRecords: Int) async throws
        -> FeedPage
    {
        guard let after = Int64(cursor), let through = Int64(head) else {
            throw FeedArchiveError.data(path: nil, message: "bad memory cursor \(cursor)")
        }
        state.withLock { $0.onRead }?()
        return try state.withLock { state in
            state.reads += 1
            if state.failReadsRemaining > 0 {
                state.failReadsRemaining -= 1
                throw FeedArchiveError.sourceUnavailable("memory feed: injected read failure")
            }
            let changes = state.partitions[partition] ?? []
            if let children = state.splits[partition], after >= changes.last?.group ?? 0 {
                let heads = Dictionary(
                    uniqueKeysWithValues: children.map { ($0, String(state.partitions[$0]?.last?.group ?? 0)) })
                return FeedPage(
                    topology: TopologyChange(
                        kind: .split, ended: [partition],
                        cursors: Dictionary(uniqueKeysWithValues: children.map { ($0, "0") }), heads: heads,
                        reason: "partition \(partition) split into \(children.joined(separator: ", "))"))
            }
            var records: [FeedRecord] = []
            var index = changes.firstIndex { $0.group > after } ?? changes.count
            while index < changes.count, changes[index].group <= through {
                let change = changes[index]
                let groupEnd = index + 1 == changes.count || changes[index + 1].group != change.group
                let position = Self.position(group: change.group, index: change.index)
                records.append(
                    FeedRecord(
                        position: position, timestamp: change.timestamp,
                        line: Self.envelope(change, partition: partition, position: position)[...],
                        pathValue: change.pathValue, cursor: groupEnd ? String(change.group) : nil))
                index += 1
                if groupEnd && records.count >= maxRecords { break }
            }
            return FeedPage(records: records)
        }
    }

    static func envelope(_ change: Change, partition: String, position: Position) -> [UInt8] {
        var out: [UInt8] = []
        var writer = EnvelopeWriter(partition: partition)
        writer.write(
            to: &out, position: position, op: .create, timestamp: change.timestamp, key: EnvelopeWriter.null,
            after: { $0.append(contentsOf: Array(change.document.utf8)) }, before: EnvelopeWriter.null,
            source: { out in
                JSONText.appendLiteral(#""group":"#, to: &out)
                JSONText.appendInt(change.group, to: &out)
            })
        return out
    }

    public func lag(from token: ContinuationToken) async throws -> Int64? {
        state.withLock { state in
            var total: Int64 = 0
            for (partition, changes) in state.partitions {
                let cursor = Int64(token.cursors[partition] ?? "0") ?? 0
                total += Int64(changes.filter { $0.group > cursor }.count)
            }
            return total
        }
    }

    public func acknowledge(_ token: ContinuationToken) async throws {
        state.withLock { $0.acknowledged = token }
    }
}
