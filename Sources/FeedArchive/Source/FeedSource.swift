import Foundation

/// One change, already encoded as its envelope line (see `EnvelopeWriter`).
public struct FeedRecord: Sendable {
    /// The change's place in its partition.
    public var position: Position
    /// Source commit time in microseconds since the Unix epoch, UTC; nil when the source has none.
    public var timestamp: Int64?
    /// The envelope as one line of JSON, without the newline; usually a slice of one buffer
    /// shared by the whole page, so a record costs no allocation of its own.
    public var line: ArraySlice<UInt8>
    /// Value for the job's partition path, when the source provides one.
    public var pathValue: String?
    /// The partition cursor after this change when a batch may end here; nil inside a group
    /// that must not be split (a transaction, items sharing one `_lsn`).
    public var cursor: String?

    public init(
        position: Position, timestamp: Int64?, line: ArraySlice<UInt8>, pathValue: String? = nil, cursor: String?
    ) {
        self.position = position
        self.timestamp = timestamp
        self.line = line
        self.pathValue = pathValue
        self.cursor = cursor
    }
}

/// What one source read returns. The last record carries a cursor, unless the page ends
/// inside a group too large for one page (a PostgreSQL transaction of a million rows): then
/// `resume` says where the next read of the partition continues. A `resume` cursor is only
/// meaningful to the same source object within one run; it never goes into a token, and a
/// batch never ends on it.
public struct FeedPage: Sendable {
    public var records: [FeedRecord]
    /// Where the next read continues when the last record has no cursor.
    public var resume: String?
    /// Set instead of records when the partition read was split or merged (Cosmos feed ranges):
    /// the runner commits what it has, records the change as a `split`/`merge` manifest line
    /// and goes on with the partitions the change names.
    public var topology: TopologyChange?
    /// Where each record's line holds the envelope's values (`EnvelopeWriter.fields`), one per
    /// record, when the source kept them; empty when it did not.
    public var fields: [EnvelopeFields.Ranges]

    public init(records: [FeedRecord], resume: String? = nil, fields: [EnvelopeFields.Ranges] = []) {
        precondition(fields.isEmpty || fields.count == records.count, "one set of fields per record")
        self.records = records
        self.resume = resume
        self.fields = fields
    }

    /// A page that reports a topology change and holds no records.
    public init(topology: TopologyChange) {
        self.records = []
        self.topology = topology
        self.fields = []
    }

    /// The cursor the next read of this partition starts after.
    public var next: String? { records.last?.cursor ?? resume }
}

/// A change in how a source cuts its feed into partitions, found while reading one of them
/// (an Azure Cosmos DB feed range split into children, or merged into a larger physical range).
/// Generic on purpose: partitions end, and partitions begin or continue from given cursors.
public struct TopologyChange: Sendable, Equatable {
    /// `split` or `merge`: the manifest line's kind.
    public enum Kind: String, Sendable { case split, merge }

    public var kind: Kind
    /// Partitions that no longer exist: their chains end at their current cursors.
    public var ended: [String]
    /// Partitions that begin (children of a split) or continue under a new cursor (a feed range
    /// now read through a merged range), with the cursor each goes on after.
    public var cursors: [String: String]
    /// Stop targets for partitions that begin; those without one take the ended partition's.
    public var heads: [String: String]
    /// What happened, for the manifest line's `reason` and the log.
    public var reason: String

    public init(kind: Kind, ended: [String], cursors: [String: String], heads: [String: String] = [:], reason: String) {
        self.kind = kind
        self.ended = ended
        self.cursors = cursors
        self.heads = heads
        self.reason = reason
    }
}

/// Facts that identify a source; stored in job.json and compared on every run.
public struct SourceIdentity: Codable, Equatable, Sendable {
    /// Hash of the identifying facts; tokens carry its first 16 hex digits.
    public var fingerprint: String
    /// The facts themselves, for messages (file, table, system identifier, …).
    public var facts: [String: String]

    public init(facts: [String: String]) {
        self.facts = facts
        let text = facts.keys.sorted().map { "\($0)=\(facts[$0]!)" }.joined(separator: "\n")
        self.fingerprint = sha256Hex(Array(text.utf8))
    }

    /// What tokens carry to tie them to this source.
    public var shortFingerprint: String { String(fingerprint.prefix(16)) }
}

/// Where a job or backfill starts.
public enum StartSpec: Equatable, Sendable, CustomStringConvertible {
    case beginning
    case now
    /// First change at or after this time (seconds since the epoch).
    case time(Date)
    /// A full token, or a source form such as `seq=42`.
    case token(String)

    /// Parses the CLI/job forms: `beginning`, `now`, an RFC 3339 time, or a token/source form.
    public static func parse(_ text: String) -> StartSpec {
        switch text {
        case "beginning": return .beginning
        case "now": return .now
        default:
            if let date = parseRFC3339(text) { return .time(date) }
            return .token(text)
        }
    }

    public var description: String {
        switch self {
        case .beginning: "beginning"
        case .now: "now"
        case .time(let date): formatRFC3339(microseconds: Int64(date.timeIntervalSince1970 * 1_000_000))
        case .token(let text): text
        }
    }
}

/// A database change feed read with the pull model. Every source module conforms to this and
/// passes the conformance suite in `FeedArchiveTesting`.
///
/// The core calls it from one task at a time; implementations need not be thread-safe.
public protocol FeedSource: AnyObject {
    /// The token kind, e.g. `sqlite`.
    var kind: String { get }
    /// Facts that identify the source, compared with job.json on every run.
    func identity() async throws -> SourceIdentity
    /// Warnings worth showing the operator once per run (e.g. a sequence that can be reused).
    func warnings() async throws -> [String]
    /// The source settings that decide what an envelope holds (SQLite: the document, key, time,
    /// op and partition columns), by their job-file key; recorded in job.json with the archive's
    /// and compared on every run.
    var archiveShape: [String: String] { get }
    /// Warnings about single changes read since the last call (a value that could not be
    /// converted and was archived in its raw form), for the run's summary.
    func drainWarnings() async -> [String]
    /// Turns a start specification into a token (source forms like `seq=42` included).
    func resolve(_ start: StartSpec) async throws -> ContinuationToken
    /// Refuses (exit 65) when the source can no longer continue from `token`: the sequence
    /// went backwards, the slot was lost, the retention window passed.
    func checkContinuity(from token: ContinuationToken) async throws
    /// Refuses (exit 65) when the source no longer holds the changes after `token` (a backfill
    /// of a range that retention or pruning removed).
    func checkRetained(from token: ContinuationToken) async throws
    /// The token a batch ends on (`token`, advanced past the batch's last change), completed
    /// with facts the source checks the next run against in `checkContinuity` (SQLite: what
    /// identifies the row at the cursor, and how many rows the reads behind it found).
    /// `previous` is the token the batch started from; `records`, the changes it holds;
    /// `lastLine`, the envelope of its last change as it was read (facts come from what was
    /// read, not from a second look that could see a later state).
    /// Called once per batch, before its commit. Default: `token` unchanged.
    func seal(
        _ token: ContinuationToken, previous: ContinuationToken, partition: String, records: Int64,
        lastLine: ArraySlice<UInt8>
    ) async throws -> ContinuationToken
    /// The cursors of the feed head now, per partition: the run's stop target.
    func head(for token: ContinuationToken) async throws -> [String: String]
    /// The next page of `partition` after `cursor`, not past `head`; empty when caught up, or
    /// a page with only `topology` set when the partition was split or merged.
    func readPage(partition: String, after cursor: String, through head: String, maxRecords: Int) async throws
        -> FeedPage
    /// A live run will read from its checkpoint once its checks pass: a source may start
    /// fetching now, so the server works while the run opens its job and checks the source.
    /// Nothing fetched counts before `readPage`; what the run never reads is dropped by
    /// `close`. (PostgreSQL opens its replication stream: the walsender starts decoding.)
    func prefetch() async
    /// Changes between `token` and the head, when the source can count them.
    func lag(from token: ContinuationToken) async throws -> Int64?
    /// Tells the source that everything up to `token` is durable (PostgreSQL advances its slot).
    func acknowledge(_ token: ContinuationToken) async throws
    /// Releases connections and handles.
    func close() async
    /// Source-specific lines for `status` (PostgreSQL: slot lag, retained WAL), as label and value.
    func statusFacts() async throws -> [(String, String)]
    /// Source-specific gauges for the metrics file, e.g. `slot_lag_bytes`.
    func metrics() async throws -> [String: Double]
    /// For a source whose feed does not reach back to the beginning (a PostgreSQL slot keeps
    /// only what it has not confirmed): the range `backfill --from beginning` reads instead,
    /// a consistent snapshot of the current rows (op `r`). Nil: the feed itself is read.
    func snapshotRange() async throws -> (from: ContinuationToken, until: ContinuationToken)?
    /// Called when a run is caught up at `cursor`: a later cursor with no changes in between,
    /// when the source holds resources for the old one (a PostgreSQL slot retaining the WAL of
    /// unpublished tables). The run records it with a `heartbeat` manifest line, moves the
    /// checkpoint and acknowledges it. Nil: nothing to do.
    func heartbeat(partition: String, after cursor: String) async throws -> String?
    /// zstd worker threads for a job that does not set `archive.workers`. A source whose
    /// server needs a core of this machine to keep up says 0: compression then runs on the
    /// reading thread, in small steps, rather than in a third busy thread.
    var defaultCompressionWorkers: Int { get }
}

extension FeedSource {
    public func warnings() async throws -> [String] { [] }
    public func drainWarnings() async -> [String] { [] }
    public var archiveShape: [String: String] { [:] }
    public func seal(
        _ token: ContinuationToken, previous: ContinuationToken, partition: String, records: Int64,
        lastLine: ArraySlice<UInt8>
    ) async throws -> ContinuationToken { token }
    public func checkRetained(from token: ContinuationToken) async throws {}
    public func acknowledge(_ token: ContinuationToken) async throws {}
    public func prefetch() async {}
    /// One worker beside the reader, two when the machine has the cores. Never none: one or
    /// more workers write the same bytes, none writes others, and a blob must not change bytes
    /// when its job moves to a machine with fewer cores (DESIGN.md: contents depend only on
    /// positions and job settings).
    public var defaultCompressionWorkers: Int { min(2, max(1, ProcessInfo.processInfo.activeProcessorCount - 1)) }
    public func close() async {}
    public func statusFacts() async throws -> [(String, String)] { [] }
    public func metrics() async throws -> [String: Double] { [:] }
    public func snapshotRange() async throws -> (from: ContinuationToken, until: ContinuationToken)? { nil }
    public func heartbeat(partition: String, after cursor: String) async throws -> String? { nil }
}
