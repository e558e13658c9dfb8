import Crypto
import Foundation

/// A replay job file: which archive it reads and the target it keeps up to date.
///
/// ```yaml
/// name: orders-replica
/// archive_job: orders.yaml      # the archive job whose archive is read (never its source)
/// source_table: public.orders   # optional: only this source table's changes
/// target:
///   kind: sqlite
///   path: replica.db
///   table: orders               # key TEXT PRIMARY KEY, doc TEXT (the `after` document)
/// ```
public struct ReplayJob: Sendable {
    public var name: String
    public var file: String
    /// The archive job whose archive is replayed.
    public var archive: JobConfig
    public var targetKind: String
    public var target: ConfigNode
    /// Only changes whose `source.table` is this (or ends with `.` and this) are applied; the
    /// others are passed over (their positions still count as applied).
    public var sourceTable: String?

    public static func load(path: String) throws -> ReplayJob {
        guard let data = FileManager.default.contents(atPath: path),
            let text = String(data: data, encoding: .utf8)
        else { throw FeedArchiveError.badJobFile(place: path, message: "cannot read the replay job file") }
        let root = try ConfigNode.parse(yaml: text, file: path).mapping("the replay job file")
        let nameNode = try root.required("name")
        let name = try nameNode.string("name")
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        else { throw nameNode.error("name must be letters, digits, '-', '_' or '.', not '\(name)'") }
        let archivePath = JobConfig.resolve(
            try root.required("archive_job").string("archive_job"), base: parentDirectory(of: path))
        let sourceTable = try root.optional("source_table").map { try $0.string("source_table") }
        let target = try root.required("target").mapping("target")
        let kindNode = try target.required("kind")
        let kind = try kindNode.string("target.kind")
        guard ["sqlite", "postgres", "cosmos"].contains(kind) else {
            throw kindNode.error("target.kind must be sqlite, postgres or cosmos, not '\(kind)'")
        }
        try root.finish()
        return ReplayJob(
            name: name, file: path, archive: try JobConfig.load(path: archivePath), targetKind: kind,
            target: target.node, sourceTable: sourceTable)
    }

    /// The replay's own lock, beside its job file: `.<file name>.lock`.
    public var lockPath: String {
        let url = URL(fileURLWithPath: file)
        return url.deletingLastPathComponent().appendingPathComponent("." + url.lastPathComponent + ".lock").path
    }
}

/// One change as a target applies it: its place, what to do, and the row's values in the
/// target shape's column order.
public struct ReplayChange {
    public enum Action: Equatable {
        /// `c`, `u`, `r`, `w`: insert or replace the row of `key`.
        case upsert
        /// `d`: the row of `key` goes.
        case delete
        /// `t`: the table is emptied.
        case truncate
        /// The change cannot become a row (a value that does not fit its column, a key that
        /// cannot be read): it goes to the dead letters with the reason.
        case reject(String)
        /// Another source table's change (`source_table`): only its position counts.
        case pass
    }

    public var part: String
    public var pos: String
    public var action: Action
    /// The key columns' values.
    public var key: [ReplayValue]
    /// A key-changing update: the row under the old key goes first.
    public var oldKey: [ReplayValue]?
    /// The value columns' values (shape order).
    public var values: [ReplayValue]
    /// Fields the source did not send (PostgreSQL's unchanged TOAST values): the row keeps
    /// them as they are.
    public var keep: [String]
    /// The envelope's key and the whole envelope line, for the dead letters.
    public var keyText: ArraySlice<UInt8>
    public var line: ArraySlice<UInt8>
    public var ts: Int64?
}

/// What one `apply` did.
public struct ReplayTally: Sendable, Equatable {
    public var applied = 0
    public var rejected = 0
    public var passed = 0
    public init(applied: Int = 0, rejected: Int = 0, passed: Int = 0) {
        self.applied = applied
        self.rejected = rejected
        self.passed = passed
    }
}

/// Where a replay writes. Each `apply` is one transaction holding the rows, the dead letters
/// and the positions they reach, so a killed replay resumes exactly where it committed.
public protocol ReplayTarget: AnyObject {
    var shape: ReplayShape { get }
    /// Per partition, the position of the last change applied.
    func applied() async throws -> [String: String]
    /// In one transaction: changes after what `applied()` says (read again inside it, so two
    /// replays of one target never apply a change twice), their dead letters, and the new
    /// positions.
    ///
    /// `expecting`: the positions this replay has seen applied (at its start, and by its own
    /// transactions since). A target whose positions inside the transaction are behind them
    /// was reset or rewound by another replay meanwhile (`--from-scratch`): applying would
    /// skip what that one emptied, so the target throws `ReplayRewound` (exit 75) instead.
    func apply(_ changes: [ReplayChange], expecting: [String: String]) async throws -> ReplayTally
    /// `--from-scratch`: the rows, the dead letters and the positions go.
    func reset() async throws
    /// Dead letters this replay has written.
    func rejectedCount() async throws -> Int
    /// Lets go of the target's connection.
    func close() async
}

extension ReplayTarget {
    public func close() async {}
}

/// A target that keeps one transaction open across several pieces of changes: a replay then
/// holds a piece in memory, not a transaction, and its transactions can be as large as the
/// commit cost wants (a commit of upserts by random key rewrites most of the table's pages).
public protocol StreamingReplayTarget: ReplayTarget {
    /// Opens the transaction, reads the positions inside it and checks them against
    /// `expecting` as `apply` does.
    func begin(expecting: [String: String]) throws
    /// Changes after the positions read at `begin`, inside the open transaction.
    func add(_ changes: [ReplayChange]) throws -> ReplayTally
    /// Writes the positions the changes reached and commits.
    func commit() throws
    /// Drops the open transaction, if any.
    func rollback()
}

/// The target's positions went back while this replay ran: another replay of the job reset it.
public func replayRewound(done: [String: String], expecting: [String: String]) -> FeedArchiveError? {
    for (part, pos) in expecting where done[part].map({ $0 < pos }) ?? true {
        return FeedArchiveError.temporary(
            "the target's position of partition \(part) went back from \(pos) to \(done[part] ?? "nothing") while this replay ran: another replay of the job reset it (--from-scratch). Nothing more was applied; run the replay again"
        )
    }
    return nil
}

/// What a replay did.
public struct ReplaySummary: Sendable {
    public var blobs = 0
    public var applied = 0
    public var rejected = 0
    /// Changes of other source tables passed over (`source_table`).
    public var passed = 0
    /// Changes at or after `--until` that were left for a later replay.
    public var held = 0
    /// `source_table` matched none of the changes read, and the target held none before: most
    /// likely a misspelt table.
    public var unmatched = false
}

/// `feedarchive replay`: applies the archive's changes (live lineage, feed order per partition,
/// as `cat` reads them) to a target after the positions it has applied: `c`/`u`/`r`/`w` upsert
/// by key, `d` deletes by key, `t` empties the table, an update that changed the key
/// (`source.old_key`) deletes the old key's row. It reads the manifest and the blobs, never the
/// source. `until`: a partition stops at its first change stamped at or after it, so the
/// target holds the state of the source at that moment.
public struct Replayer {
    public let job: ReplayJob
    public let target: any ReplayTarget

    public init(job: ReplayJob, target: any ReplayTarget) {
        self.job = job
        self.target = target
    }

    /// `until`: a time (microseconds); `untilToken`: a token the archive recorded (a run's
    /// checkpoint), the state of the source when that token was the checkpoint.
    public func run(until: Int64? = nil, untilToken: String? = nil, fromScratch: Bool = false) async throws
        -> ReplaySummary
    {
        let lock = try JobLock(path: job.lockPath, mode: 0o644)
        defer { lock.release() }
        if fromScratch { try await target.reset() }
        var summary = ReplaySummary()
        let archive = JobArchive(job: job.archive)
        let manifest = try Self.manifest(archive, job: job)
        let applied = try await target.applied()
        try Self.refuseWhatWouldBeLost(manifest, archive: archive, applied: applied)
        let cuts = try untilToken.map { try Self.positions(at: $0, in: manifest, archive: archive) }
        if !fromScratch { try Self.refuseGoingBack(manifest, applied: applied, until: until, cuts: cuts) }
        let converter = RowConverter(shape: target.shape, sourceTable: job.sourceTable)
        var stopped: Set<String> = []
        // Several blobs go into one transaction (the positions with them): a commit is what
        // costs, and a killed replay still resumes exactly where it committed.
        var pending: [ReplayChange] = []
        var pendingBytes = 0
        var seen = applied
        // A streaming target takes pieces into one open transaction; the others a transaction
        // per `apply`.
        let streaming = target as? any StreamingReplayTarget
        let pieceChanges = streaming == nil ? Self.transactionChanges : Self.pieceChanges
        let pieceBytes = streaming == nil ? Self.transactionBytes : Self.pieceBytes
        var inTransaction = false
        var reached: [String: String] = [:]
        var openChanges = 0
        var openBytes = 0
        var openSince = Date()
        func commit() throws {
            guard let streaming, inTransaction else { return }
            try streaming.commit()
            inTransaction = false
            for (part, pos) in reached { seen[part] = max(seen[part] ?? pos, pos) }
            reached = [:]
            openChanges = 0
            openBytes = 0
        }
        func flush() async throws {
            guard !pending.isEmpty else { return }
            let tally: ReplayTally
            if let streaming {
                if !inTransaction {
                    try streaming.begin(expecting: seen)
                    inTransaction = true
                    openSince = Date()
                }
                tally = try streaming.add(pending)
                for change in pending { reached[change.part] = max(reached[change.part] ?? change.pos, change.pos) }
                openChanges += pending.count
                openBytes += pendingBytes
            } else {
                tally = try await target.apply(pending, expecting: seen)
                for change in pending { seen[change.part] = max(seen[change.part] ?? change.pos, change.pos) }
            }
            summary.applied += tally.applied
            summary.rejected += tally.rejected
            summary.passed += tally.passed
            pending.removeAll(keepingCapacity: true)
            pendingBytes = 0
            if openChanges >= Self.streamedTransactionChanges || openBytes >= Self.streamedTransactionBytes
                || Date().timeIntervalSince(openSince) >= Self.streamedTransactionSeconds
            {
                try commit()
            }
        }
        do {
            for entry in manifest.currentLines() where entry.namesBlob && entry.lineage == "live" {
                guard let path = entry.path, let part = entry.part, !stopped.contains(part),
                    let compression = Compression.of(path: path)
                else { continue }
                if let done = applied[part], let last = entry.lastPos, last <= done { continue }
                let absolute = archive.layout.absolute(path)
                if let want = entry.sha256 {
                    // The whole file is checked before any of it is applied.
                    guard let digest = try Self.sha256(of: absolute) else {
                        throw FeedArchiveError.data(
                            path: absolute, message: "the blob named by manifest seq \(entry.seq) is missing",
                            hint: "`feedarchive verify \(job.archive.name) --full` names the backfill that mends it")
                    }
                    guard digest == want else {
                        throw FeedArchiveError.data(
                            path: absolute,
                            message:
                                "the blob is not the one manifest seq \(entry.seq) committed (its SHA-256 differs): nothing of it was applied",
                            hint: "`feedarchive verify \(job.archive.name) --full` names the backfill that mends it")
                    }
                }
                // Decoded as a stream: the changes of each decoded piece join the transaction, which
                // is committed whenever it is full, so memory holds a transaction, not a blob.
                var stop = false
                var number = 0
                var carry: [UInt8] = []
                func take(_ decoded: UnsafeRawBufferPointer, last: Bool) throws {
                    guard !stop else { return }
                    // Whole lines only; the rest waits for the next piece. Only the new bytes
                    // are searched and the carried ones copied once, so a long line costs its
                    // length, not its length times the pieces it spans.
                    var piece: [UInt8]
                    if last {
                        piece = carry
                        piece.append(contentsOf: decoded)
                        carry = []
                    } else {
                        let bytes = decoded.bindMemory(to: UInt8.self)
                        guard let newline = bytes.lastIndex(of: 0x0A) else {
                            carry.append(contentsOf: bytes)
                            return
                        }
                        piece = carry
                        piece.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[...newline]))
                        carry = Array(bytes[(newline + 1)...])
                    }
                    guard !piece.isEmpty else { return }
                    _ = try Self.lines(piece, number: &number, file: absolute) { line, ranges in
                        func field(_ index: Int) -> ArraySlice<UInt8> {
                            piece[
                                (line.lowerBound + ranges[index].lowerBound)..<(line.lowerBound
                                    + ranges[index].upperBound)]
                        }
                        let pos = String(decoding: field(0).dropFirst().dropLast(), as: UTF8.self)
                        let ts = field(3)
                        let micros =
                            ts.first == 0x22
                            ? Array(ts.dropFirst().dropLast()).withUnsafeBufferPointer { parseTimestampMicros($0) }
                            : nil
                        if let done = applied[part], pos <= done {
                            if !fromScratch, let until, let micros, micros >= until {
                                throw Self.goingBack(part: part, done: done, read: true)
                            }
                            return true
                        }
                        if let until, let micros, micros >= until {
                            stop = true
                            return false
                        }
                        if let cuts, cuts[part].map({ pos > $0 }) ?? true {
                            stop = true
                            return false
                        }
                        pending.append(
                            converter.change(
                                part: part, pos: pos, op: field(2).dropFirst().first ?? 0x75, key: field(4),
                                after: field(5), before: field(6), source: field(7), line: piece[line], ts: micros))
                        return true
                    }
                    pendingBytes += piece.count
                }
                let decoder: any BlobDecoder
                let fd = open(absolute, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    throw FeedArchiveError.data(
                        path: absolute,
                        message: "the blob named by manifest seq \(entry.seq) cannot be read: errno \(errno)",
                        hint: "`feedarchive verify \(job.archive.name) --full` names the backfill that mends it")
                }
                defer { close(fd) }
                var input = [UInt8](repeating: 0, count: Self.readSize)
                do {
                    decoder = try compression.makeDecoder()
                    while !stop {
                        let count = input.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                        if count < 0 { throw FeedArchiveError.io(operation: "read", path: absolute, errno: errno) }
                        if count == 0 {
                            try decoder.finish { try take($0, last: false) }
                            try take(UnsafeRawBufferPointer(start: nil, count: 0), last: true)
                            break
                        }
                        try input.withUnsafeBytes {
                            try decoder.write(UnsafeRawBufferPointer(rebasing: $0[0..<count])) {
                                try take($0, last: false)
                            }
                        }
                        if pending.count >= pieceChanges || pendingBytes >= pieceBytes { try await flush() }
                    }
                } catch let error as FeedArchiveError {
                    throw error
                } catch {
                    throw FeedArchiveError.data(path: absolute, message: "cannot decode: \(error)")
                }
                if stop {
                    stopped.insert(part)
                    summary.held += 1
                }
                summary.blobs += 1
                if pending.count >= pieceChanges || pendingBytes >= pieceBytes { try await flush() }
            }
            try await flush()
            try commit()
            summary.unmatched =
                job.sourceTable != nil && applied.isEmpty && summary.passed > 0 && summary.applied == 0
                && summary.rejected == 0
        } catch {
            if inTransaction { streaming?.rollback() }
            throw error
        }
        return summary
    }

    /// A transaction ends once it holds this many changes or decoded bytes (at the end of a
    /// blob, or of a decoded piece of a large one).
    static let transactionChanges = 8192
    static let transactionBytes = 8 << 20
    /// A streaming target's transaction is on its disk, not in memory: it takes pieces of
    /// `pieceChanges` or `pieceBytes` up to `streamedTransactionChanges` or
    /// `streamedTransactionBytes`. A commit of upserts by random key rewrites most of the
    /// table's pages (journal and file), so fewer, larger commits are what makes it fast.
    /// It also commits after `streamedTransactionSeconds`: the target's file is locked for
    /// writing while a transaction is open (and for reading once dirty pages spill), and another
    /// replay into the same file waits 5 seconds before it gives up.
    static let streamedTransactionChanges = 1 << 20
    static let streamedTransactionBytes = 128 << 20
    static let streamedTransactionSeconds = 2.0
    static let pieceChanges = 4096
    static let pieceBytes = 2 << 20
    /// Compressed bytes read and decoded at a time.
    static let readSize = 64 << 10

    /// The hex SHA-256 of a file, read in pieces; nil when it does not exist.
    static func sha256(of path: String) throws -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw FeedArchiveError.io(operation: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        var hasher = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 { throw FeedArchiveError.io(operation: "read", path: path, errno: errno) }
            if count == 0 { break }
            chunk.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        return hexString(hasher.finalize())
    }

    /// Per partition, the last position archived when `token` was the checkpoint: the live
    /// lines up to the one that ends at `token` (lines compaction replaced count, their
    /// positions are the same changes').
    static func positions(at token: String, in manifest: Manifest, archive: JobArchive) throws -> [String: String] {
        guard let end = manifest.entries.first(where: { $0.lineage == "live" && $0.toToken == token }) else {
            throw FeedArchiveError.usage(
                "--until \(token.prefix(40))…: no run of this archive ended at this token (take one from a run's summary, `status` or the manifest's to_token), or use --until TIME"
            )
        }
        var cuts: [String: String] = [:]
        for entry in manifest.entries
        where entry.seq <= end.seq && entry.lineage == "live" && entry.kind == .blob {
            guard let part = entry.part, let last = entry.lastPos else { continue }
            cuts[part] = max(cuts[part] ?? last, last)
        }
        return cuts
    }

    static func manifest(_ archive: JobArchive, job: ReplayJob) throws -> Manifest {
        guard archive.fs.isDirectory(archive.layout.metaDirectory) else {
            throw FeedArchiveError.usage("job \(job.archive.name) has no archive yet: run it first")
        }
        let (manifest, damage) = try archive.store.read()
        if let damage, !damage.isTornTail {
            throw FeedArchiveError.data(path: damage.file, message: "line \(damage.line): \(damage.message)")
        }
        return manifest
    }

    /// `--until` before what the target holds (without `--from-scratch`): a replay only moves
    /// forward, so the target would silently stay later than asked. Refused before anything is
    /// applied when the manifest shows it (a partition applied past the token's cut, or a blob
    /// applied whose changes are all at or after the time); a blob that straddles the time is
    /// caught as it is read.
    static func refuseGoingBack(
        _ manifest: Manifest, applied: [String: String], until: Int64?, cuts: [String: String]?
    ) throws {
        if let cuts {
            for (part, done) in applied where cuts[part].map({ done > $0 }) ?? true {
                throw goingBack(part: part, done: done)
            }
        }
        guard let until else { return }
        for entry in manifest.currentLines() where entry.namesBlob && entry.lineage == "live" {
            guard let part = entry.part, let done = applied[part], let first = entry.firstPos, first <= done,
                let minTs = entry.minTs.flatMap(parseRFC3339)
            else { continue }
            if Int64(minTs.timeIntervalSince1970 * 1_000_000) >= until { throw goingBack(part: part, done: done) }
        }
    }

    /// `read`: found while reading blobs, after this replay may have committed changes of other
    /// partitions (all before `--until`).
    static func goingBack(part: String, done: String, read: Bool = false) -> FeedArchiveError {
        FeedArchiveError.usage(
            "--until: the target already holds changes of partition \(part) after that point (applied up to \(done)); a replay only moves forward. \(read ? "The replay stopped there (what it committed before, all before --until, stays)" : "Nothing was applied"); add --from-scratch to rebuild the target up to --until"
        )
    }

    /// Not handled, so refused rather than skipped: positions that start over at a second live
    /// epoch, and ranges retention removed that the target has not applied.
    static func refuseWhatWouldBeLost(_ manifest: Manifest, archive: JobArchive, applied: [String: String]) throws {
        if manifest.entries.filter({ $0.kind == .epoch && $0.lineage == "live" }).count > 1 {
            throw FeedArchiveError.data(
                path: archive.layout.manifestDirectory,
                message:
                    "the archive has more than one live epoch (positions start over): replay across an epoch is not supported yet",
                hint: "nothing was applied")
        }
        let pruned = manifest.prunedSeqs
        for line in manifest.entries where pruned.contains(line.seq) && line.lineage == "live" {
            guard let part = line.part, let last = line.lastPos else { continue }
            if applied[part].map({ $0 < last }) ?? true {
                throw FeedArchiveError.data(
                    path: archive.layout.manifestDirectory,
                    message:
                        "retention removed changes of partition \(part) up to \(last) that this target has not applied: the replica would miss them",
                    hint: "nothing was applied")
            }
        }
    }

    /// Each envelope line of a decoded blob with its fields located; `body` returns false to
    /// stop.
    static func lines(
        _ decoded: [UInt8], from offset: Int = 0, number: inout Int, file: String,
        _ body: (Range<Int>, EnvelopeFields.Ranges) throws -> Bool
    ) throws -> Int {
        try decoded.withUnsafeBufferPointer { buffer in
            var start = offset
            while start < buffer.count {
                let end =
                    memchr(buffer.baseAddress! + start, 0x0A, buffer.count - start).map {
                        buffer.baseAddress!.distance(to: $0.assumingMemoryBound(to: UInt8.self))
                    } ?? buffer.count
                number += 1
                let line = start..<end
                start = end + 1
                let ranges: EnvelopeFields.Ranges
                do {
                    ranges = try EnvelopeFields.locate(UnsafeBufferPointer(rebasing: buffer[line]))
                } catch {
                    throw FeedArchiveError.data(path: file, message: "line \(number): \(error)")
                }
                if try !body(line, ranges) { return min(start, buffer.count) }
            }
            return buffer.count
        }
    }

    /// Per partition, what the target has applied against what the archive holds.
    public struct Status: Sendable {
        public struct Partition: Sendable {
            public var part: String
            public var applied: String?
            public var archived: String?
            /// Changes archived after `applied` (counted by whole blobs, so an upper bound).
            public var behind: Int64
        }
        public var partitions: [Partition] = []
        public var rejected = 0
        public var behind: Int64 { partitions.reduce(0) { $0 + $1.behind } }
    }

    public func status() async throws -> Status {
        let archive = JobArchive(job: job.archive)
        let manifest = try Self.manifest(archive, job: job)
        let applied = try await target.applied()
        var last: [String: String] = [:]
        var behind: [String: Int64] = [:]
        for entry in manifest.currentLines() where entry.namesBlob && entry.lineage == "live" {
            guard let part = entry.part, let pos = entry.lastPos else { continue }
            last[part] = max(last[part] ?? pos, pos)
            if applied[part].map({ $0 < pos }) ?? true { behind[part, default: 0] += entry.records ?? 0 }
        }
        var status = Status()
        for part in Set(last.keys).union(applied.keys).sorted() {
            status.partitions.append(
                .init(part: part, applied: applied[part], archived: last[part], behind: behind[part] ?? 0))
        }
        status.rejected = try await target.rejectedCount()
        return status
    }
}

/// Turns envelope fields into a target row.
struct RowConverter {
    let shape: ReplayShape
    let sourceTable: String?

    func change(
        part: String, pos: String, op: UInt8, key: ArraySlice<UInt8>, after: ArraySlice<UInt8>,
        before: ArraySlice<UInt8> = ArraySlice("null".utf8), source: ArraySlice<UInt8>, line: ArraySlice<UInt8>,
        ts: Int64?
    ) -> ReplayChange {
        var change = ReplayChange(
            part: part, pos: pos, action: .upsert, key: [], oldKey: nil, values: [], keep: [], keyText: key, line: line,
            ts: ts)
        let sourceFields =
            sourceTable != nil || Self.contains(source, "\"old_key\"") || Self.contains(source, "\"unchanged_toast\"")
            ? JSONScan.fields(source) : nil
        if let sourceTable {
            let table = sourceFields?.first(where: { $0.name == "table" }).flatMap { JSONScan.string($0.value) }
            if table != sourceTable && table != "public." + sourceTable {
                change.action = .pass
                return change
            }
        }
        switch op {
        case UInt8(ascii: "t"):
            change.action = .truncate
            return change
        case UInt8(ascii: "d"):
            change.action = .delete
        default:
            change.action = .upsert
        }
        let document: ArraySlice<UInt8>? = after.elementsEqual("null".utf8) ? nil : after
        if change.action == .upsert && document == nil {
            change.action = .reject("an upsert without a document (after is null): no row to write")
            return change
        }
        do {
            change.key = try keyValues(key, document: change.action == .delete ? nil : document)
            if let old = sourceFields?.first(where: { $0.name == "old_key" })?.value ?? Self.oldKey(key, before: before)
            {
                let oldKey = try keyValues(old, document: nil)
                if oldKey != change.key { change.oldKey = oldKey }
            }
            if change.action == .upsert {
                var document = document
                if let kept = sourceFields?.first(where: { $0.name == "unchanged_toast" })?.value {
                    change.keep = Self.strings(kept)
                    // The values the source left out, from the old row when it came whole
                    // (REPLICA IDENTITY FULL).
                    if let current = document, let old = JSONScan.fields(before), current.last == 0x7D {
                        var filled = Array(current.dropLast())
                        for name in change.keep {
                            guard let value = old.last(where: { $0.name == name })?.value else { continue }
                            if filled.last(where: { !JSONScan.isSpace($0) }) != 0x7B { filled.append(0x2C) }
                            JSONText.appendString(name, to: &filled)
                            filled.append(0x3A)
                            filled.append(contentsOf: value)
                            change.keep.removeAll { $0 == name }
                        }
                        filled.append(0x7D)
                        document = filled[...]
                    }
                    // Only fields the row holds matter: a mapped column's, or any with the document.
                    let holdsDocument = shape.valueColumns.contains { $0.field == nil }
                    change.keep.removeAll { name in !holdsDocument && !shape.valueColumns.contains { $0.field == name }
                    }
                    if change.oldKey != nil && !change.keep.isEmpty {
                        throw ReplayConversion.Reason(
                            "the update moved the row to another key and left \(change.keep.joined(separator: ", ")) out (unchanged TOAST): the row under the new key cannot be built from this change; give the source table REPLICA IDENTITY FULL so updates carry the old values"
                        )
                    }
                }
                change.values = try values(document)
            }
        } catch let reason as ReplayConversion.Reason {
            change.action = .reject(reason.text)
            change.key = []
            change.oldKey = nil
            change.values = []
        } catch {
            change.action = .reject("\(error)")
        }
        return change
    }

    func keyValues(_ key: ArraySlice<UInt8>, document: ArraySlice<UInt8>?) throws -> [ReplayValue] {
        if shape.isDocuments {
            guard !key.elementsEqual("null".utf8) else { throw ReplayConversion.Reason("the change has no key") }
            return [.text(String(decoding: key, as: UTF8.self))]
        }
        let keyFields = key.first == 0x7B ? JSONScan.fields(key) : nil
        var documentFields: [(name: String, value: ArraySlice<UInt8>)]?? = .none  // read only when needed
        return try shape.keyColumns.map { column in
            let field = column.field ?? column.name
            let value: ArraySlice<UInt8>
            if let keyFields {
                guard let found = keyFields.first(where: { $0.name == field })?.value else {
                    throw ReplayConversion.Reason("key column \(column.name): the key has no field \(field)")
                }
                value = found
            } else if shape.keyColumns.count == 1, !key.elementsEqual("null".utf8) {
                value = key
            } else if let found = {
                if documentFields == nil { documentFields = .some(document.flatMap { JSONScan.fields($0) }) }
                return documentFields!?.first(where: { $0.name == field })?.value
            }() {
                value = found
            } else {
                throw ReplayConversion.Reason(
                    "key column \(column.name): neither the key nor the document has \(field)")
            }
            switch ReplayConversion.convert(value, to: column.type) {
            case .success(.null): throw ReplayConversion.Reason("key column \(column.name) is null")
            case .success(let converted): return converted
            case .failure(let reason):
                throw ReplayConversion.Reason(
                    "key column \(column.name): \(Self.quote(value)) is \(reason.text) (\(column.type.rawValue))")
            }
        }
    }

    func values(_ document: ArraySlice<UInt8>?) throws -> [ReplayValue] {
        guard let document else { return shape.valueColumns.map { _ in .null } }
        if shape.isDocuments { return [.json(document)] }
        guard let fields = JSONScan.fields(document) else {
            throw ReplayConversion.Reason("the document is not an object, its fields cannot be columns")
        }
        return try shape.valueColumns.map { column in
            guard let field = column.field else { return .json(document) }
            guard let value = fields.first(where: { $0.name == field })?.value else { return .null }
            switch ReplayConversion.convert(value, to: column.type) {
            case .success(let converted): return converted
            case .failure(let reason):
                throw ReplayConversion.Reason(
                    "column \(column.name): \(Self.quote(value)) is \(reason.text) (\(column.type.rawValue))")
            }
        }
    }

    /// The old key from the whole old row (PostgreSQL's REPLICA IDENTITY FULL sends `before`
    /// and no `old_key`): the key's fields, valued as the old row had them, spelled as the key.
    static func oldKey(_ key: ArraySlice<UInt8>, before: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard key.first == 0x7B, before.first == 0x7B, let names = JSONScan.fields(key), !names.isEmpty,
            let old = JSONScan.fields(before)
        else { return nil }
        var text: [UInt8] = [0x7B]
        for (index, field) in names.enumerated() {
            guard let value = old.last(where: { $0.name == field.name })?.value else { return nil }
            if index > 0 { text.append(0x2C) }
            JSONText.appendString(field.name, to: &text)
            text.append(0x3A)
            text.append(contentsOf: value)
        }
        text.append(0x7D)
        return text[...]
    }

    static func quote(_ value: ArraySlice<UInt8>) -> String {
        let text = String(decoding: value.prefix(60), as: UTF8.self)
        return value.count > 60 ? text + "…" : text
    }

    static func contains(_ haystack: ArraySlice<UInt8>, _ needle: StaticString) -> Bool {
        let count = needle.utf8CodeUnitCount
        guard haystack.count >= count else { return false }
        let first = needle.utf8Start[0]
        var index = haystack.startIndex
        while index + count <= haystack.endIndex {
            if haystack[index] == first
                && haystack[index..<(index + count)].elementsEqual(
                    UnsafeBufferPointer(start: needle.utf8Start, count: count))
            {
                return true
            }
            index += 1
        }
        return false
    }

    /// The strings of a JSON array of strings.
    static func strings(_ array: ArraySlice<UInt8>) -> [String] {
        guard array.first == 0x5B else { return [] }
        var result: [String] = []
        var index = array.startIndex + 1
        while index < array.endIndex {
            guard array[index] == 0x22 else {
                index += 1
                continue
            }
            var end = index + 1
            while end < array.endIndex && !(array[end] == 0x22 && array[end - 1] != 0x5C) { end += 1 }
            if end < array.endIndex, let text = JSONScan.string(array[index...end]) { result.append(text) }
            index = end + 1
        }
        return result
    }
}
