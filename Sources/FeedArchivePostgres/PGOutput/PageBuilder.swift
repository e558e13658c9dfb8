import FeedArchive

/// Envelope lines of one page, in one shared buffer.
struct PageBuilder: ~Copyable {
    var bytes: [UInt8] = []
    var pending: [(position: Position, timestamp: Int64, range: Range<Int>, cursor: String?)] = []
    /// Where each envelope is built before it joins `bytes` in one copy.
    private var scratch = ByteWriter(capacity: 4096)

    init(capacity: Int) {
        bytes.reserveCapacity(capacity)
    }

    /// Builds in `spare`'s memory when nothing else holds it (the previous page's records are
    /// gone), sparing a fresh buffer's page faults, and in a new buffer otherwise; a spare
    /// above `keepAtMost` bytes (one page of huge rows) is let go rather than kept for good.
    init(reusing spare: inout [UInt8], capacity: Int, keepAtMost: Int) {
        swap(&bytes, &spare)
        if bytes.capacity > keepAtMost { bytes = [] }
        bytes.removeAll(keepingCapacity: true)  // keeps the memory only if no one else holds it
        bytes.reserveCapacity(capacity)
    }

    var count: Int { pending.count }

    mutating func record(
        transaction: PGOutputDecoder.Transaction, index: Int, _ write: (inout ByteWriter) throws -> Void
    ) throws {
        scratch.removeAll()
        try write(&scratch)
        // The envelope starts `{"pos":"` and the 25-byte position written by appendPosition.
        let line = scratch.bytes
        let position = Position(utf8: UnsafeRawBufferPointer(rebasing: line[8..<33]))!
        let start = bytes.count
        bytes.append(contentsOf: line)
        pending.append((position, transaction.timestamp, start..<bytes.count, nil))
    }

    /// The transaction ended: its last record may end a batch.
    mutating func endTransaction(cursor: String) {
        if !pending.isEmpty { pending[pending.count - 1].cursor = cursor }
    }

    func page(resume: String?) -> FeedPage {
        FeedPage(
            records: pending.map {
                FeedRecord(position: $0.position, timestamp: $0.timestamp, line: bytes[$0.range], cursor: $0.cursor)
            },
            resume: resume)
    }
}
