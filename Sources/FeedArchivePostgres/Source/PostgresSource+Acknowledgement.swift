import FeedArchive
import Foundation
import PostgresNIO

extension PostgresSource {
    /// Advances the slot to the checkpoint (DESIGN.md step 8). A lost connection is not an
    /// error here: the checkpoint is durable, and the next run acknowledges again.
    ///
    /// While a replication stream is open the slot is active and `pg_replication_slot_advance`
    /// would fail: the stream's status updates confirm the LSN instead (and the last one goes
    /// out before the stream ends, see `ReplicationConnection.finish`).
    public func acknowledge(_ token: ContinuationToken) async throws {
        let cursor = try cursorLSN(token)
        acknowledging = true
        if let replication = stream?.replication {
            replication.acknowledge(cursor)
            if stream!.reachedHead, stream!.awaitingAck.map({ cursor >= $0 }) ?? true {
                await closeStream(keepState: true)  // everything read is acknowledged: free the slot
            }
            return
        }
        if let early = await prefetched() {
            early.acknowledge(cursor)  // the prefetched stream holds the slot: confirm through it
            return
        }
        do {
            _ = try await rows(
                """
                SELECT pg_replication_slot_advance(slot_name, \(cursor.description)::pg_lsn)
                FROM pg_replication_slots WHERE slot_name = \(settings.slot) AND confirmed_flush_lsn < \(cursor.description)::pg_lsn
                """, doing: "advance slot \(settings.slot)")
        } catch let error as FeedArchiveError {
            if case .sourceUnavailable = error { return }
            if case .temporary = error { return }
            throw error
        }
    }
}
