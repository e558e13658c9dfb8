import FeedArchive
import Foundation
import NIOCore
import PostgresNIO

extension PostgresSource {
    /// DESIGN.md "Source notes": when only tables outside the publication change, the slot
    /// would never move and would hold their WAL. Caught up at `cursor` with more than
    /// `heartbeat_after` of WAL since: write a logical message in a transaction of its own (its
    /// commit flushes the WAL before it), peek up to the message's LSN, and if no published
    /// transaction commits in between, that LSN is a cursor with nothing before it to archive.
    public func heartbeat(partition: String, after cursor: String) async throws -> String? {
        guard settings.heartbeatAfter > 0, let from = LSN(cursor) else { return nil }
        await closeStream()  // the peek below needs the slot, which an open stream holds
        let held =
            try await rows(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), \(from.description)::pg_lsn)::int8",
                doing: "measure the WAL since the checkpoint"
            ).first?.decode(Int64?.self) ?? 0
        guard held >= settings.heartbeatAfter else { return nil }
        let emitted = try await rows(
            "SELECT pg_logical_emit_message(true, 'feedarchive', 'heartbeat')::text", doing: "write a heartbeat"
        ).first?.decode(String.self)
        guard let mark = emitted.flatMap({ LSN($0) }), mark > from else { return nil }
        let begins = try await rows(
            PostgresQuery(
                unsafeSQL: """
                    SELECT data FROM pg_logical_slot_peek_binary_changes('\(settings.slot)'::name, '\(mark)'::pg_lsn, NULL,
                        'proto_version', '1', 'publication_names', '\(settings.publication)') WHERE get_byte(data, 0) = 66
                    """), doing: "check for changes before the heartbeat")
        for row in begins {
            var buffer = try row.decode(ByteBuffer.self)
            guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: "B"),
                let final = buffer.readInteger(as: UInt64.self)
            else { return nil }
            if LSN(final) >= from { return nil }  // a change to archive: the next run reads it
        }
        return mark.description
    }
}
