import FeedArchive
import Foundation
import NIOCore
import PostgresNIO

/// Pages from the slot: either read mode's pgoutput messages go through one decoder into one
/// page builder, so both modes archive the same bytes.
extension PostgresSource {
    /// The read in progress: a peek of the slot in LSN windows (`read_mode: peek`, see
    /// `openWindow`), or a replication stream (`read_mode: stream`); the decoder and the
    /// position of the next page either way.
    struct ReadStream {
        /// The peek's connection (`read_mode: peek`).
        var connection: PostgresConnection?
        /// The replication stream (`read_mode: stream`); open until the source is closed or the
        /// slot is needed by SQL (reading stops at the head, see `reachedHead`).
        var replication: ReplicationConnection?
        var cursorOpen = false
        var buffered: [ByteBuffer] = []
        var next = 0
        var decoder = PGOutputDecoder()
        /// The window being read ends here; the read as a whole stops at `head`.
        var windowEnd: LSN
        var head: LSN
        /// The cursor (or resume cursor) this stream continues from.
        var expect: String
        /// A message read but not yet used (it belongs to the next page).
        var pending: ByteBuffer?
        /// Every transaction that commits before the head was read (stream mode).
        var reachedHead = false
        /// The end of the last transaction returned (stream mode): once the head is reached,
        /// the stream stays open until this is acknowledged (see `addStreamed`).
        var awaitingAck: LSN?
    }

    /// `X/Y@N`: inside the transaction that commits at X/Y, changes 0…N were returned.
    static func resumeCursor(_ commit: LSN, index: Int) -> String { "\(commit)@\(index)" }

    public func readPage(partition: String, after cursor: String, through head: String, maxRecords: Int) async throws
        -> FeedPage
    {
        if SnapshotReader.isSnapshot(cursor) { return try await readSnapshot(after: cursor, maxRecords: maxRecords) }
        guard partition == Self.partition, let headLSN = LSN(head) else {
            throw FeedArchiveError.data(
                path: nil, message: "postgres partition '\(partition)' or head '\(head)' is not valid")
        }
        if stream == nil || stream!.expect != cursor || stream!.head != headLSN {
            try await startStream(after: cursor, head: headLSN)
        }
        do {
            return try await nextPage(maxRecords: max(1, min(maxRecords, Self.pageLimit)))
        } catch {
            stream?.replication?.abort()
            if let connection = stream?.connection { try? await connection.close() }
            stream = nil
            if let error = error as? PGOutputError {
                throw FeedArchiveError.data(path: nil, message: "\(error) (slot \(settings.slot))")
            }
            throw classify(error, doing: "read slot \(settings.slot)")
        }
    }

    func startStream(after cursor: String, head: LSN) async throws {
        await closeStream()
        var decoder = PGOutputDecoder()
        if let at = cursor.firstIndex(of: "@") {
            guard let commit = LSN(cursor[..<at]), let index = Int(cursor[cursor.index(after: at)...]) else {
                throw FeedArchiveError.data(path: nil, message: "postgres resume cursor '\(cursor)' is not valid")
            }
            decoder.skipBefore = commit
            decoder.skipThroughIndex = index
            decoder.mustResumeAt = commit
        } else {
            guard let lsn = LSN(cursor) else {
                throw FeedArchiveError.data(path: nil, message: "postgres cursor '\(cursor)' is not an LSN")
            }
            decoder.skipBefore = lsn
        }
        if settings.readMode == .stream {
            var reader = ReadStream(decoder: decoder, windowEnd: decoder.skipBefore, head: head, expect: cursor)
            let early = await takePrefetched()
            if decoder.skipBefore < head {
                if let early {
                    reader.replication = early
                } else {
                    reader.replication = try await openReplication(from: decoder.skipBefore)
                }
            } else {
                reader.reachedHead = true
                if let early { await finish(early) }
            }
            stream = reader
            return
        }
        let connection = try await connect()
        stream = ReadStream(
            connection: connection, decoder: decoder, windowEnd: decoder.skipBefore, head: head, expect: cursor)
    }

    /// Adds one pgoutput message to the page; returns the page when it ends here. A change
    /// that would overfill the page ends it inside its transaction and waits (`pending`).
    func add(
        _ message: UnsafeRawBufferPointer, to page: inout PageBuilder, decoder: inout PGOutputDecoder, maxRecords: Int
    ) throws -> FeedPage? {
        let type = message.first ?? 0
        let isChange =
            type == UInt8(ascii: "I") || type == UInt8(ascii: "U") || type == UInt8(ascii: "D")
            || type == UInt8(ascii: "T")
        if isChange, page.count >= maxRecords, let transaction = decoder.transaction, !transaction.skip {
            // A transaction larger than a page: end the page inside it.
            stream!.pending = ByteBuffer(bytes: message)
            let resume = Self.resumeCursor(transaction.commitLSN, index: transaction.index - 1)
            stream!.expect = resume
            return page.page(resume: resume)
        }
        if case .commit(let end, let hadRecords) = try decoder.decode(message, into: &page), hadRecords, page.count > 0
        {
            let cursor = end.description
            page.endTransaction(cursor: cursor)
            if page.count >= maxRecords {
                stream!.expect = cursor
                stream!.awaitingAck = end
                return page.page(resume: nil)
            }
        }
        return nil
    }

    func nextPage(maxRecords: Int) async throws -> FeedPage {
        var page = PageBuilder(
            reusing: &spareBuffer, capacity: maxRecords * 256, keepAtMost: max(maxRecords * 1024, 4 << 20))
        defer { spareBuffer = page.bytes }
        // The decoder is a local while the page is built: a stored property of this class
        // would be checked for exclusive access on every message.
        var decoder = stream!.decoder
        stream!.decoder = PGOutputDecoder()
        defer { stream?.decoder = decoder }
        if let pending = stream!.pending {  // the change that did not fit the last page
            stream!.pending = nil
            if let ended = try pending.withUnsafeReadableBytes({
                try add($0, to: &page, decoder: &decoder, maxRecords: maxRecords)
            }) {
                return ended
            }
        }
        if settings.readMode == .stream {
            if let ended = try await addStreamed(to: &page, decoder: &decoder, maxRecords: maxRecords) { return ended }
        } else {
            while let message = try await nextPeekedMessage() {
                if let ended = try message.withUnsafeReadableBytes({
                    try add($0, to: &page, decoder: &decoder, maxRecords: maxRecords)
                }) {
                    return ended
                }
            }
        }
        // Caught up with the head.
        if let last = page.pending.last {
            guard last.cursor != nil else {
                throw PGOutputError(message: "the peek ended inside a transaction (at \(last.position))")
            }
            stream!.expect = last.cursor!
            stream!.awaitingAck = LSN(last.cursor!)
        }
        if let replication = stream?.replication, stream!.reachedHead,
            !acknowledging || stream!.awaitingAck.map({ $0 <= replication.acknowledged }) ?? true
        {
            await closeStream(keepState: true)  // nothing read is waiting for an acknowledgement
        }
        return page.page(resume: nil)
    }
}
