import FeedArchive
import Foundation

/// Timelines: a failover to a standby or a restore to a point in time keeps the system
/// identifier but starts a new timeline, forked from the old one at a switch point. What was
/// archived past that point on the old timeline never happened on the new one, and what the new
/// one wrote below the checkpoint would never be read. Each token records the timeline it was
/// read on (`x.tli`); a run on another timeline reads the server's timeline history and goes on
/// only when the checkpoint lies at or before the fork.
extension PostgresSource {
    /// The timeline the server writes WAL on now: the first 8 hex digits of its WAL file names.
    func currentTimeline() async throws -> UInt32 {
        if let cachedTimeline { return cachedTimeline }
        let name = try await rows(
            "SELECT pg_walfile_name(pg_current_wal_lsn())", doing: "read the server's timeline"
        ).first?.decode(String.self)
        guard let name, name.count >= 8, let timeline = UInt32(name.prefix(8), radix: 16) else {
            throw FeedArchiveError.sourceUnavailable("the server's WAL file name '\(name ?? "")' holds no timeline")
        }
        cachedTimeline = timeline
        return timeline
    }

    public func seal(
        _ token: ContinuationToken, previous: ContinuationToken, partition: String, records: Int64,
        lastLine: ArraySlice<UInt8>
    ) async throws -> ContinuationToken {
        var sealed = token
        sealed.extra["tli"] = String(try await currentTimeline())
        return sealed
    }

    /// One line of a timeline history file: `timeline` ended at `switchpoint`.
    public struct TimelineFork: Equatable, Sendable {
        public var timeline: UInt32
        public var switchpoint: LSN
    }

    /// Parses a history file (`parentTLI <tab> switchpoint <tab> reason`, one line each).
    public static func parseHistory(_ text: String) -> [TimelineFork] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard fields.count >= 2, let timeline = UInt32(fields[0]), let point = LSN(fields[1]) else { return nil }
            return TimelineFork(timeline: timeline, switchpoint: point)
        }
    }

    /// The server's history of `timeline` (`TIMELINE_HISTORY`, over a replication connection).
    func timelineHistory(_ timeline: UInt32) async throws -> [TimelineFork] {
        let connection = try await ReplicationConnection.connect(settings: settings)
        defer { connection.abort() }
        let rows: [[[UInt8]?]]
        do {
            rows = try await connection.command("TIMELINE_HISTORY \(timeline)")
        } catch let error as ReplicationConnection.ServerError {
            throw FeedArchiveError.sourceUnavailable("TIMELINE_HISTORY \(timeline): \(error)")
        }
        guard let content = rows.first?.last ?? nil else { return [] }
        var text = String(decoding: content, as: UTF8.self)
        if text.hasPrefix("\\x") {  // bytea in its hex text form
            var bytes: [UInt8] = []
            var digits = text.utf8.dropFirst(2).makeIterator()
            while let high = digits.next(), let low = digits.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            }
            text = String(decoding: bytes, as: UTF8.self)
        }
        return Self.parseHistory(text)
    }

    /// Refuses (65) a checkpoint read on another timeline past the point where the server's
    /// timeline forked from it.
    func checkTimeline(_ token: ContinuationToken, cursor: LSN) async throws {
        guard let text = token.extra["tli"], let archived = UInt32(text) else { return }
        let now = try await currentTimeline()
        guard now != archived else { return }
        let history = try await timelineHistory(now)
        let fork = history.first { $0.timeline == archived }?.switchpoint
        if let fork, cursor <= fork { return }
        throw FeedArchiveError.data(
            path: nil,
            message: fork.map {
                "the server is on timeline \(now), which left timeline \(archived) at \($0), before the checkpoint at \(cursor) (a failover or a restore to a point in time): changes archived after \($0) did not happen on this timeline, and changes it wrote there would never be read"
            }
                ?? "the server is on timeline \(now), whose history does not hold timeline \(archived), on which the checkpoint at \(cursor) was read: continuity from the checkpoint cannot be proven",
            hint:
                "start a new lineage from the slot with `feedarchive epoch JOB --from beginning --reason \"timeline \(now)\"` (re-create the slot first with `feedarchive setup JOB` if it is gone), and backfill with `feedarchive backfill JOB --from beginning`"
        )
    }
}
