import FeedArchive
import Foundation
import NIOCore
import PostgresNIO

/// `read_mode: peek`: the slot is read with SQL, `pg_logical_slot_peek_binary_changes` over one
/// LSN window at a time, through a cursor in small fetches.
///
/// Why a cursor rather than streaming the peek's rows: postgres-nio 1.33 traps
/// (`RowStreamStateMachine` precondition) when the server dies while a result larger than
/// one socket read is in flight with back-pressure applied — exactly the server crash a
/// run must survive. Small fetches keep each result within a read or two, and a server
/// crash between fetches is an ordinary lost connection, retried.
extension PostgresSource {
    /// Rows per FETCH: small enough that a result rarely spans socket reads.
    static let fetchSize = 128

    /// Opens the next window's peek; false when the head is reached.
    func openWindow() async throws -> Bool {
        guard var current = stream, let connection = current.connection, current.windowEnd < current.head else {
            return false
        }
        let end = LSN(min(current.head.value, current.windowEnd.value + UInt64(settings.readWindow)))
        // The names are checked identifiers and the LSN is ours: safe to write inline.
        _ = try await run(on: connection, "BEGIN", doing: "start reading slot \(settings.slot)")
        _ = try await run(
            on: connection,
            PostgresQuery(
                unsafeSQL: """
                    DECLARE feedarchive_peek NO SCROLL CURSOR FOR
                    SELECT data FROM pg_logical_slot_peek_binary_changes('\(settings.slot)'::name, '\(end)'::pg_lsn, NULL,
                        'proto_version', '1', 'publication_names', '\(settings.publication)')
                    """), doing: "peek slot \(settings.slot)")
        current.cursorOpen = true
        current.windowEnd = end
        stream = current
        return true
    }

    /// The next message of the peek (`read_mode: peek`), or nil once the head is reached.
    func nextPeekedMessage() async throws -> ByteBuffer? {
        while true {
            if stream!.next < stream!.buffered.count {
                defer { stream!.next += 1 }
                return stream!.buffered[stream!.next]
            }
            if !stream!.cursorOpen {
                guard try await openWindow() else { return nil }
            }
            Liveness.current?.beat()  // windows of WAL without a published change return no page
            let rows = try await run(
                on: stream!.connection!, PostgresQuery(unsafeSQL: "FETCH \(Self.fetchSize) FROM feedarchive_peek"),
                doing: "read slot \(settings.slot)")
            stream!.buffered = try rows.map { try $0.decode(ByteBuffer.self) }
            stream!.next = 0
            if rows.isEmpty {
                // This window is done; the next one starts where it ended.
                _ = try await run(on: stream!.connection!, "COMMIT", doing: "read slot \(settings.slot)")
                stream!.cursorOpen = false
            }
        }
    }
}
