import FeedArchive
import Foundation
import NIOCore

/// `read_mode: stream`: the slot is read over the streaming replication protocol
/// (`START_REPLICATION … LOGICAL`), whose XLogData messages carry the same pgoutput payloads a
/// peek returns; `nextPage` turns them into the same pages, so both modes archive the same bytes.
///
/// A run is bounded by its head (`pg_current_wal_lsn()` at run start), as pg_recvlogical's
/// `--endpos` is: the stream ends at the first transaction that commits at or after the head,
/// or at a keepalive, outside a transaction, whose WAL end has reached it (the walsender has
/// decoded everything before that point, so nothing committing before the head is to come).
/// An idle server is asked for such a keepalive (see `ReplicationConnection`'s watchdog), so a
/// run with nothing new ends at once.
extension PostgresSource {
    /// A replication connection streaming the slot from `lsn` (transactions committing before
    /// it are skipped by the server; the decoder skips them too).
    func openReplication(from lsn: LSN) async throws -> ReplicationConnection {
        let connection: ReplicationConnection
        do {
            connection = try await ReplicationConnection.connect(settings: settings)
        } catch {
            throw classify(error, doing: "connect to \(settings.endpoint) for replication")
        }
        do {
            try await connection.startReplication(slot: settings.slot, publication: settings.publication, from: lsn)
        } catch {
            connection.abort()
            throw classify(error, doing: "start streaming slot \(settings.slot)")
        }
        return connection
    }

    /// Adds the stream's messages to `page` until it ends (returned) or the head is reached
    /// (nil). Messages are taken in runs of what the socket delivered, synchronously: no
    /// suspension, no reference count and no exclusivity check per 100-byte message.
    ///
    /// The head is reached at the first transaction that commits at or after it, or at a
    /// keepalive outside a transaction whose WAL end has reached it. Reading stops there, but
    /// the stream stays open until what was read is acknowledged (`acknowledge`, or at once
    /// when nothing waits: the end of `nextPage`), so the last batch's acknowledgement goes
    /// out as a status update, which the walsender applies at once. Closed first, the slot
    /// would have to be advanced with `pg_replication_slot_advance`, which decodes again
    /// everything from the slot's restart LSN (about 200 ms for the benchmark's 90 MB).
    /// Whatever the server sends meanwhile waits in the inbound queue, bounded by its
    /// high-water mark, and is dropped at the close.
    func addStreamed(to page: inout PageBuilder, decoder: inout PGOutputDecoder, maxRecords: Int) async throws
        -> FeedPage?
    {
        guard let replication = stream?.replication, let head = stream?.head.value, stream?.reachedHead == false else {
            return nil
        }
        var ended: FeedPage?
        var reached = false
        while ended == nil && !reached {
            try await replication.readMessages { type, body in
                switch type {
                case UInt8(ascii: "d"):
                    switch body.first {
                    case UInt8(ascii: "w"):
                        // WAL start, WAL end and send time, then the pgoutput message.
                        guard body.count > 25 else {
                            throw ReplicationConnection.Failure.protocolViolation("short XLogData")
                        }
                        let message = UnsafeRawBufferPointer(rebasing: body[25...])
                        if message[0] == UInt8(ascii: "B"), message.count >= 9,
                            UInt64(bigEndian: message.loadUnaligned(fromByteOffset: 1, as: UInt64.self)) >= head
                        {
                            reached = true  // this transaction commits after the head
                            return false
                        }
                        ended = try add(message, to: &page, decoder: &decoder, maxRecords: maxRecords)
                        return ended == nil
                    case UInt8(ascii: "k"):
                        Liveness.current?.beat()  // the server is there, decoding WAL with nothing to send
                        guard body.count >= 18 else {
                            throw ReplicationConnection.Failure.protocolViolation("short keepalive")
                        }
                        if body[17] == 1 { replication.sendStatus() }
                        if UInt64(bigEndian: body.loadUnaligned(fromByteOffset: 1, as: UInt64.self)) >= head
                            && decoder.transaction == nil
                        {
                            reached = true
                            return false
                        }
                        return true
                    default:
                        throw ReplicationConnection.Failure.protocolViolation("unknown CopyData message")
                    }
                case UInt8(ascii: "E"):
                    throw ReplicationConnection.serverError(ByteBuffer(bytes: body))
                case UInt8(ascii: "c"), UInt8(ascii: "C"), UInt8(ascii: "Z"):
                    throw ReplicationConnection.Failure.closed  // the server ended streaming (shutting down)
                default:
                    return true  // NoticeResponse, ParameterStatus
                }
            }
        }
        if reached { stream?.reachedHead = true }
        return ended
    }

    /// Opens the replication stream before the run's first read (`FeedSource.prefetch`), from
    /// the slot's confirmed position (`0/0`: the server starts there), so the walsender
    /// decodes while the run checks the slot and opens its job. A read from any cursor can
    /// adopt it: the server would start at the slot's confirmed position for a cursor before
    /// it, and the decoder skips by position what commits before a later cursor. A stream that
    /// fails to open is forgotten; the read then opens its own and reports what fails.
    public func prefetch() async {
        guard settings.readMode == .stream, stream == nil, early == nil else { return }
        early = .opening(Task { try await self.openReplication(from: LSN(0)) })
    }

    /// The prefetched stream, once open (it stays prefetched); nil when none was asked for or
    /// it failed to open.
    func prefetched() async -> ReplicationConnection? {
        switch early {
        case .opening(let task)?:
            guard let connection = try? await task.value else {
                early = nil
                return nil
            }
            early = .open(connection)
            return connection
        case .open(let connection)?:
            return connection
        case nil:
            return nil
        }
    }

    /// The prefetched stream, no longer prefetched: the caller reads it or finishes it.
    func takePrefetched() async -> ReplicationConnection? {
        let connection = await prefetched()
        early = nil
        return connection
    }

    func closeEarlyStream() async {
        if let early = await takePrefetched() { await finish(early) }
    }

    /// Ends the replication stream, if one is open, with a last status update (the durable
    /// position) and a clean CopyDone; `keepState` keeps the read's position for later pages.
    func closeStream(keepState: Bool = false) async {
        if let replication = stream?.replication {
            stream?.replication = nil
            await finish(replication)
        }
        if let connection = stream?.connection { try? await connection.close() }
        if !keepState { stream = nil }
    }

    /// Ends `replication` cleanly; when the walsender may not have read the last status update,
    /// advances the slot with SQL to what it acknowledged, once the slot is free.
    func finish(_ replication: ReplicationConnection) async {
        let acknowledged = replication.acknowledged
        guard await !replication.finish(limit: min(settings.queryTimeout, 10)), acknowledged.value > 0 else { return }
        // The walsender may exit without reading the last status update: advance with SQL once
        // it has let go of the slot (best effort; the next run repeats it).
        for _ in 0..<10 {
            let slot = try? await slotState()
            guard let slot, slot.confirmed < acknowledged else { break }
            if slot.activePID == nil {
                try? await acknowledge(try token(acknowledged))
                break
            }
            try? await Task.sleep(nanoseconds: 200_000_000)
        }
    }
}
