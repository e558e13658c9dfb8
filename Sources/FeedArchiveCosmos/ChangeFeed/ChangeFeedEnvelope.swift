import FeedArchive
import Foundation

/// Turns the items of one change feed page into envelope lines (DESIGN.md "Record envelope"),
/// one buffer per page with each record a slice of it.
///
/// Latest-version items: op `w`, `after` the document's own bytes, `key` `{"id","pk"}`,
/// `source` `_rid`/`_etag`/`_lsn`/`_ts`. All-versions items: op from `metadata.operationType`,
/// `after` from `current`, `before` from `previous`, times from `metadata.crts`.
/// Positions are `_lsn` (20 digits) + `-` + the index among the page's items of that `_lsn`.
struct ChangeFeedEnvelope {
    let partition: String
    let mode: CosmosFeedMode
    /// The partition key path split into its segments (`/a/b` → `a`, `b`).
    let keyPath: [String]

    func records(body: [UInt8], cursorAfter: String, floor: Int64? = nil) throws -> [FeedRecord] {
        try body.withUnsafeBufferPointer { try records(buffer: $0, cursorAfter: cursorAfter, floor: floor) }
    }

    /// The records of a response body as it came (no copy of the body).
    func records(body: Data, cursorAfter: String, floor: Int64? = nil) throws -> [FeedRecord] {
        try body.withUnsafeBytes {
            try records(buffer: $0.bindMemory(to: UInt8.self), cursorAfter: cursorAfter, floor: floor)
        }
    }

    /// `floor`: the `_lsn` of the continuation the page was asked after; an item below it went
    /// backwards across pages (items that share it are let through: whether a continuation
    /// names the last `_lsn` read or the next one is the service's to say).
    func records(buffer: UnsafeBufferPointer<UInt8>, cursorAfter: String, floor: Int64? = nil) throws
        -> [FeedRecord]
    {
        var chunks = LineChunks()
        var envelope = EnvelopeWriter(partition: partition)
        var pending: [(Position, Int64?)] = []
        var lastLSN: Int64 = -1
        var index: UInt64 = 0
        let scanner = ChangeFeedScanner(bytes: buffer)
        try ChangeFeedBody(scanner: scanner).forEachItem { item, members in
            let start = chunks.startLine()
            pending.append(
                try append(item, members: members, scanner: scanner, envelope: &envelope, into: &chunks.out) { lsn in
                    guard lsn > 0 else { throw scanner.failure("an item has no _lsn") }
                    if let floor, lsn < floor {
                        throw FeedArchiveError.data(
                            path: nil,
                            message:
                                "feed range \(partition): the service returned an item with _lsn \(lsn) for a read after continuation \(floor): the feed went backwards across pages; nothing from this page was committed",
                            hint:
                                "this is not the order the change feed promises: keep the response (run with the same token) and report it to Azure support. To move on without it, `feedarchive epoch JOB --from now --reason \"...\"` starts after these changes; then sign the range off with `feedarchive ack-gap`"
                        )
                    }
                    guard lsn >= lastLSN else {
                        // Not a passing fault: the same page comes back the same way, so retrying
                        // cannot help, and positions must increase for verify to prove the range.
                        throw FeedArchiveError.data(
                            path: nil,
                            message:
                                "feed range \(partition): the service returned items out of order within one page (_lsn \(lsn) after \(lastLSN)); nothing from this page was committed",
                            hint:
                                "this is not the order the change feed promises: keep the response (run with the same token) and report it to Azure support. To move on without it, `feedarchive epoch JOB --from now --reason \"...\"` starts after these changes; then sign the range off with `feedarchive ack-gap`"
                        )
                    }
                    index = lsn == lastLSN ? index + 1 : 0
                    lastLSN = lsn
                    return Position.pair(UInt64(lsn), width: 20, index, width: 8)
                })
            chunks.endLine(start)
        }
        var records = zip(pending, chunks.finish()).map { entry, line in
            FeedRecord(position: entry.0, timestamp: entry.1, line: line, cursor: nil)
        }
        // Batches end only at page boundaries: only the page's last item carries the cursor.
        if !records.isEmpty { records[records.count - 1].cursor = cursorAfter }
        return records
    }

    /// Writes one envelope; returns the item's `_lsn` and time (microseconds).
    private func append(
        _ item: Range<Int>, members: [ChangeFeedScanner.Member], scanner: ChangeFeedScanner,
        envelope: inout EnvelopeWriter,
        into out: inout [UInt8], position: (Int64) throws -> Position
    ) throws -> (Position, Int64?) {
        var document: Range<Int>?
        var documentMembers: [ChangeFeedScanner.Member] = []
        var previous: Range<Int>?
        var op = ChangeOp.write
        var lsn: Int64?
        var seconds: Int64?
        var metadataMembers: [ChangeFeedScanner.Member] = []
        var operation: Range<Int>?
        switch mode {
        case .latestVersion:
            document = item
            documentMembers = members
            lsn = scanner.integer(scanner.member(members, "_lsn"))
            seconds = scanner.integer(scanner.member(members, "_ts"))
        case .allVersionsAndDeletes:
            guard let metadata = scanner.member(members, "metadata"), let meta = try scanner.members(of: metadata)
            else {
                throw scanner.failure("an all-versions item has no metadata object")
            }
            metadataMembers = meta
            if let current = scanner.member(members, "current"), let fields = try scanner.members(of: current),
                !fields.isEmpty
            {
                document = current
                documentMembers = fields
            }
            if let before = scanner.member(members, "previous"), !scanner.isNull(before) { previous = before }
            lsn = scanner.integer(scanner.member(meta, "lsn"))
            seconds =
                scanner.integer(scanner.member(meta, "crts")) ?? scanner.integer(scanner.member(documentMembers, "_ts"))
            operation = scanner.member(meta, "operationType")
            switch scanner.decodeString(operation) {
            case "create": op = .create
            case "replace", "upsert": op = .update
            case "delete": op = .delete
            default: op = .write
            }
            if op == .delete { document = nil }
        }
        guard let lsn else { throw scanner.failure("an item has no _lsn (lsn in metadata for all-versions items)") }
        let place = try position(lsn)
        let micros = try seconds.map { seconds in
            let (micros, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
            guard !overflow else {
                throw scanner.failure("the time of the item at _lsn \(lsn) is out of range (\(seconds))")
            }
            return micros
        }

        try envelope.write(
            to: &out, position: place, op: op, timestamp: micros,
            key: { out in
                // The id and the partition key value, from the document or (deletes) the metadata.
                JSONText.appendLiteral(#"{"id":"#, to: &out)
                let id = scanner.member(documentMembers, "id") ?? scanner.member(metadataMembers, "id")
                try appendRaw(id, "id", scanner, lsn: lsn, to: &out)
                JSONText.appendLiteral(#","pk":"#, to: &out)
                var keyValue = try partitionKeyValue(documentMembers, scanner: scanner)
                if keyValue == nil, let metaKey = scanner.member(metadataMembers, "partitionKey") {
                    if let fields = try scanner.members(of: metaKey) {
                        keyValue =
                            fields.first {
                                scanner.keyEquals($0.key, "pk")
                                    || String(decoding: scanner.bytes[$0.key], as: UTF8.self) == keyPath.last
                            }?.value ?? fields.first?.value
                    } else {
                        keyValue = metaKey
                    }
                }
                try appendRaw(keyValue, "partition key", scanner, lsn: lsn, to: &out)
                out.append(0x7D)
            },
            after: { out in try appendRaw(document, "document", scanner, lsn: lsn, to: &out) },
            before: { out in try appendRaw(previous, "previous image", scanner, lsn: lsn, to: &out) },
            source: { out in
                JSONText.appendLiteral(#""_rid":"#, to: &out)
                try appendRaw(scanner.member(documentMembers, "_rid"), "_rid", scanner, lsn: lsn, to: &out)
                JSONText.appendLiteral(#","_etag":"#, to: &out)
                try appendRaw(scanner.member(documentMembers, "_etag"), "_etag", scanner, lsn: lsn, to: &out)
                JSONText.appendLiteral(#","_lsn":"#, to: &out)
                JSONText.appendInt(lsn, to: &out)
                JSONText.appendLiteral(#","_ts":"#, to: &out)
                if let ts = scanner.integer(scanner.member(documentMembers, "_ts")) ?? seconds {
                    JSONText.appendInt(ts, to: &out)
                } else {
                    EnvelopeWriter.null(&out)
                }
                if mode == .allVersionsAndDeletes {
                    JSONText.appendLiteral(#","operationType":"#, to: &out)
                    try appendRaw(operation, "operationType", scanner, lsn: lsn, to: &out)
                    if let previousLSN = scanner.integer(scanner.member(metadataMembers, "previousImageLSN")) {
                        JSONText.appendLiteral(#","previousImageLSN":"#, to: &out)
                        JSONText.appendInt(previousLSN, to: &out)
                    }
                }
            })
        return (place, micros)
    }

    /// The value at the partition key path inside the document, as raw JSON.
    private func partitionKeyValue(_ members: [ChangeFeedScanner.Member], scanner: ChangeFeedScanner) throws -> Range<
        Int
    >? {
        var current = members
        for (offset, segment) in keyPath.enumerated() {
            guard let value = scanner.member(current, named: segment) else { return nil }
            if offset == keyPath.count - 1 { return value }
            guard let next = try scanner.members(of: value) else { return nil }
            current = next
        }
        return nil
    }

    /// Copies a value of the item, checked as it is copied, or writes `null` for none.
    private func appendRaw(
        _ range: Range<Int>?, _ what: String, _ scanner: ChangeFeedScanner, lsn: Int64, to out: inout [UInt8]
    ) throws {
        guard let range else { return JSONText.appendLiteral("null", to: &out) }
        guard JSONText.appendIfValid(UnsafeBufferPointer(rebasing: scanner.bytes[range]), to: &out) else {
            throw scanner.failure("the \(what) at _lsn \(lsn) is not valid JSON")
        }
    }
}
