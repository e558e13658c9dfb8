import FeedArchive
import Foundation
import Logging
import PostgresNIO

/// PostgreSQL logical decoding through a replication slot with the `pgoutput` plugin, read
/// over the streaming replication protocol (`read_mode: stream`) or with SQL
/// (`pg_logical_slot_peek_binary_changes`, `read_mode: peek`), never with the consuming
/// `get_changes`: the slot only moves when `acknowledge` confirms a durable checkpoint.
///
/// One partition, `"0"`. A cursor is the end LSN of the last archived transaction's commit
/// (what the slot is advanced to); a position is the commit LSN and the change's index in
/// its transaction. Messages are decoded as they arrive, so memory stays bounded for a
/// transaction of any size (pages then end inside it and carry a `resume` cursor).
///
/// Its concerns live in extensions: connections and server errors, the slot, positions,
/// acknowledgement and status (`Source/`), the two read modes (`Reading/`) and the snapshot
/// a backfill reads (`Snapshot/`).
///
/// Used from one task at a time (the core's contract); `@unchecked Sendable` so the CLI can
/// hand it to a task.
public final class PostgresSource: FeedSource, @unchecked Sendable {
    public let kind = "postgres"
    public static let partition = "0"
    /// Pages hold at most this many changes, whatever `batch.page_size` asks: the archiver
    /// handles a page (~0.5 µs a change) while nothing reads the replication socket, and the
    /// walsender's send buffer fills in under a millisecond, so a larger page would stall the
    /// walsender once a page. Peeks page alike, so that both read modes give the same pages.
    static let pageLimit = 256
    /// Compression on the reading thread unless the job sets `archive.workers`: the walsender
    /// is the bottleneck and, with the server on this machine, needs a core to itself; a zstd
    /// worker as a third busy thread preempts it or the reader (on 2 cores, one worker makes
    /// a 200,000-row transaction ~10% slower). The same on any machine, so that a job's blobs
    /// do not change bytes when it moves.
    public var defaultCompressionWorkers: Int { 0 }
    public let settings: PostgresSourceSettings
    let logger: Logger

    /// Queries and acknowledgements.
    var control: PostgresConnection?
    /// The read in progress: a peek, or a replication stream.
    var stream: ReadStream?
    /// The last page's buffer, kept to build the next page in: once the records of that page
    /// are gone (the batcher has copied them), its memory is reused rather than mapped afresh.
    var spareBuffer: [UInt8] = []
    /// The replication stream `prefetch` is opening, then the stream it opened, until the first
    /// read adopts it (or `close` ends it).
    var early: EarlyStream?
    enum EarlyStream {
        case opening(Task<ReplicationConnection, any Error>)
        case open(ReplicationConnection)
    }
    /// The snapshot being read by a backfill.
    var snapshot: SnapshotReader?
    /// Whether this source is acknowledged at all (a live run is, from its start; verify and
    /// backfill are not): only then is a stream held open at the head for the acknowledgement.
    var acknowledging = false
    var cachedIdentity: SourceIdentity?
    /// The server's timeline, read once per source object (a failover ends its connections).
    var cachedTimeline: UInt32?
    var connectionCount = 0

    public init(settings: PostgresSourceSettings) {
        self.settings = settings
        var logger = Logger(label: "feedarchive.postgres")
        logger.logLevel = .critical  // postgres-nio logs every query at debug; errors reach us as throws
        self.logger = logger
    }

    deinit {
        // A source dropped without `close()` still closes its connections (postgres-nio
        // requires it); the task keeps them alive until they are closed.
        let open = [control, stream?.connection, snapshot?.connection].compactMap { $0 }
        stream?.replication?.abort()
        if !open.isEmpty {
            Task { for connection in open { try? await connection.close() } }
        }
    }

    public static func make(job: JobConfig) throws -> PostgresSource {
        PostgresSource(settings: try PostgresSourceSettings.parse(job.sourceSettings))
    }

    public func close() async {
        await closeStream()
        await closeEarlyStream()
        if let snapshot { try? await snapshot.connection.close() }
        snapshot = nil
        if let control { try? await control.close() }
        control = nil
    }
}
