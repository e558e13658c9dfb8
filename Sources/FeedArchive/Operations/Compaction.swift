import Crypto
import Foundation
import Synchronization

/// One compacted blob: the blobs of one hour folder and partition it replaces, in feed order.
public struct CompactedBlob: Sendable {
    public var folder: String
    public var partition: String
    /// The manifest seqs of the lines replaced.
    public var replaces: [Int64]
    public var records: Int64
    /// Changes archived twice (a backfill overlapping the live range) the new blob holds once.
    public var duplicates: Int64 = 0
    /// Compressed bytes of the blobs replaced, and of the new blob (0 in a dry run).
    public var bytesBefore: Int64
    public var bytesAfter: Int64
    /// The new blob, relative to the job root (nil in a dry run).
    public var path: String?
}

/// What `feedarchive compact` did, or would do (`dryRun`).
public struct CompactionReport: Sendable {
    public var job: String
    public var dryRun: Bool
    /// Closed bucket folders that got their `_SUCCESS` marker.
    public var marked = 0
    /// The time through which every partition of the live token has archived changes.
    public var watermark: String?
    public var blobs: [CompactedBlob] = []
    /// Files of blobs an earlier compaction replaced, or a prune removed, but could not delete
    /// (it was stopped).
    public var leftovers: [String] = []
    /// Blobs and buckets left as they are, and why (a missing or damaged blob, a file another
    /// line names too).
    public var skipped: [String] = []
}

/// `_feedarchive/compacted.json`: where the next compaction starts reading the manifest (the
/// first line of the oldest bucket still open at the last one: every line before it was
/// considered in a closed bucket) and how far in time each partition was archived then, so a
/// compaction after every run costs what the new lines cost, not the archive's history.
struct CompactionMark: Codable, Equatable {
    static let format = 1
    var format = Self.format
    /// The first line to read, and that line's `prev` (the manifest it belongs to).
    var fromSeq: Int64
    var fromPrev: String
    /// Per partition, the newest `max_ts` (microseconds) of its live blob lines before `fromSeq`.
    var newest: [String: Int64]

    enum CodingKeys: String, CodingKey {
        case format
        case fromSeq = "from_seq"
        case fromPrev = "from_prev"
        case newest
    }
}

/// `_feedarchive/watermark.json`: the time through which every partition of the live token has
/// archived changes (the oldest of their newest commit times), as of the last compaction, and
/// the grace after which a bucket counts as closed.
struct Watermark: Codable, Equatable {
    var through: String
    var after: Double
}

/// `feedarchive compact`: merges the blobs of closed hour buckets, per partition, into one blob
/// per bucket (or several of at most `targetSize` compressed bytes), so lake engines read a few
/// large files instead of many small ones (DESIGN.md, "Compaction").
///
/// Through the commit protocol: the new blob is written to a temp file, fsynced, renamed into
/// the bucket's folder (named in `placing`), and a `compact` line naming the lines it replaces
/// (the same range: first/last position, from/to tokens) is the commit point; only then are
/// the replaced files deleted. A compaction stopped at any point loses nothing: before its line
/// recovery quarantines the new blob; after it, the next compaction deletes the leftovers.
///
/// What is compacted: blob lines of the live lineage after its last epoch, in one hour folder
/// and partition, that follow one another in the feed (each `from_token` the previous
/// `to_token`), whose bucket closed (the archive holds changes `after` past the bucket's end in
/// every partition) and whose file no other line names. The records and their order are
/// unchanged, byte for byte.
public struct Compactor {
    /// The transform section the replaced lines were all written with (nil when they differ,
    /// or had none): the merged blob holds their bytes, so it was written with it too.
    static func commonTransform(_ lines: [ManifestEntry]) -> String? {
        guard let first = lines.first?.transform, lines.allSatisfy({ $0.transform == first }) else { return nil }
        return first
    }

    public let job: JobConfig
    public let fs: any FileSystem

    public init(job: JobConfig, fs: any FileSystem = PosixFileSystem()) {
        self.job = job
        self.fs = fs
    }

    /// The marker of a closed bucket's folder, as Spark and Hive name it.
    public static let marker = "_SUCCESS"

    struct Group {
        var folder: String
        var partition: String
        var lines: [ManifestEntry]
        /// Blob lines of backfill lineages inside the range of `lines` (same partition and
        /// folder): folded in, their duplicates removed, a missing live blob's changes taken
        /// from them.
        var folded: [ManifestEntry] = []

        var all: [ManifestEntry] { (lines + folded).sorted { $0.seq < $1.seq } }
    }

    /// `format`: the compression of the blobs it writes (`.parquet` turns JSON-lines buckets
    /// into Parquet, a bucket of one blob too); nil: the job's.
    public func compact(
        targetSize: Int64 = 256 << 20, after: TimeInterval = 3600, dryRun: Bool = false, format: Compression? = nil
    ) throws -> CompactionReport {
        var compactor = self
        compactor.target = format ?? job.archive.compression
        compactor.converting = format != nil && format != job.archive.compression
        return try compactor.run(targetSize: targetSize, after: after, dryRun: dryRun)
    }

    /// What the compacted blobs are written as, and whether blobs of another compression are
    /// taken in (and a bucket of one blob rewritten) to be converted.
    var target: Compression = .zstd
    var converting = false

    private func run(targetSize: Int64, after: TimeInterval, dryRun: Bool) throws -> CompactionReport {
        let archive = JobArchive(job: job, fs: fs)
        let lock = try archive.openForWriting()
        defer { lock.release() }
        guard fs.entryKind(archive.layout.identityFile) != nil else {
            throw FeedArchiveError.usage("job \(job.name) has no archive yet: run it first")
        }
        // A dry run changes nothing: not even recovery's roll-forward or quarantine.
        if !dryRun { _ = try archive.recover() }
        var report = CompactionReport(job: job.name, dryRun: dryRun)
        // The lines since the last compaction's mark (all of them without one).
        var mark = (try? fs.read(archive.layout.compactedFile)).flatMap { $0 }.flatMap {
            try? JSONDecoder().decode(CompactionMark.self, from: Data($0))
        }
        var manifest: Manifest
        // A conversion looks at every closed bucket, also those an earlier compaction passed.
        if let known = mark, !converting, known.format == CompactionMark.format,
            known.fromSeq <= archive.manifest.tailSeq + 1
        {
            (manifest, _) = try archive.store.readTail(from: min(known.fromSeq, max(1, archive.manifest.tailSeq)))
            if manifest.entries.first(where: { $0.seq == known.fromSeq })?.prev != known.fromPrev
                && known.fromSeq <= manifest.tailSeq
            {
                mark = nil
                (manifest, _) = try archive.store.read()
            }
        } else {
            mark = nil
            (manifest, _) = try archive.store.read()
        }

        // Files a stopped compaction replaced, or a stopped prune removed, and did not delete.
        let replaced = manifest.replacedSeqs.union(manifest.prunedSeqs)
        let current = Set(manifest.currentLines().filter(\.namesBlob).compactMap(\.path))
        var folders: Set<String> = []
        for entry in manifest.entries where replaced.contains(entry.seq) {
            guard let path = entry.path, !current.contains(path), !report.leftovers.contains(path),
                fs.entryKind(archive.layout.absolute(path)) == .file
            else { continue }
            report.leftovers.append(path)
            if !dryRun {
                try fs.remove(archive.layout.absolute(path))
                folders.insert(parentDirectory(of: archive.layout.absolute(path)))
            }
        }
        for folder in folders.sorted() { try fs.syncDirectory(folder) }

        var (groups, watermark, skipped, next, closed) = plan(
            manifest, targetSize: targetSize, after: after, newest: mark?.newest ?? [:])
        report.watermark = watermark.map { formatRFC3339(microseconds: $0) }
        report.skipped = skipped
        // Two groups' blobs are read and written at once, then committed in order.
        var prepared: [Int: Result<Prepared, any Error>] = [:]
        func prepareAhead(from index: Int) {
            let window = (index..<min(groups.count, index + 2)).filter {
                groups[$0].folded.isEmpty && prepared[$0] == nil
            }
            // Two groups whose temp files would have one name (partitions that sanitize alike,
            // the same first position) are prepared one at a time.
            guard !dryRun, window.count == 2,
                Set(
                    window.map {
                        sanitizePathComponent(groups[$0].partition) + "_" + (groups[$0].lines[0].firstPos ?? "")
                    }
                )
                .count == 2
            else { return }
            // The two preparations share nothing but the archive's folder cache (locked) and
            // the encoder pool (locked), as a run's reading and commit threads do.
            let shared = UncheckedShare((self, archive, groups))
            let results = Mutex([Int: UncheckedShare<Result<Prepared, any Error>>]())
            DispatchQueue.concurrentPerform(iterations: window.count) { slot in
                let (compactor, archive, groups) = shared.value
                let index = window[slot]
                let outcome = Result { try compactor.prepare(groups[index], into: archive) }
                results.withLock { $0[index] = UncheckedShare(outcome) }
            }
            for (index, outcome) in results.withLock({ $0 }) { prepared[index] = outcome.value }
        }
        defer {
            // A failure left later groups prepared: their temp files go.
            for case .success(let ready) in prepared.values { ready.writer.abort(fs: fs) }
        }
        for (index, group) in groups.enumerated() {
            var blob = CompactedBlob(
                folder: group.folder, partition: group.partition, replaces: group.all.map(\.seq),
                records: group.lines.reduce(0) { $0 + ($1.records ?? 0) },
                bytesBefore: group.all.reduce(0) { $0 + ($1.bytes ?? 0) }, bytesAfter: 0)
            if !dryRun {
                do {
                    prepareAhead(from: index)
                    let entry: ManifestEntry
                    if let ready = prepared.removeValue(forKey: index) {
                        entry = try commit(group, try ready.get(), into: archive)
                    } else {
                        entry = try group.folded.isEmpty ? write(group, into: archive) : fold(group, into: archive)
                    }
                    blob.path = entry.path
                    blob.bytesAfter = entry.bytes ?? 0
                    blob.records = entry.records ?? 0
                    blob.duplicates = (entry.replacedRecords ?? entry.records ?? 0) - (entry.records ?? 0)
                } catch let error as FeedArchiveError where error.exitCode == 65 {
                    // A missing or damaged blob (verify's to report, a backfill's to mend)
                    // keeps its bucket as it is; the others are compacted. The next compaction
                    // looks at this bucket again (a backfill may have mended it by then).
                    report.skipped.append("\(group.folder), partition \(group.partition): \(error)")
                    if let first = group.lines.first?.seq, let current = next, first < current.fromSeq {
                        next = self.mark(manifest, from: first, newest: mark?.newest ?? [:])
                    }
                    continue
                }
            }
            report.blobs.append(blob)
        }
        if !dryRun && !groups.isEmpty { try archive.touchCheckpoint() }
        if !dryRun, let watermark {
            // Completeness markers, after the buckets' data is durable: `_SUCCESS` in each
            // closed bucket's folder, and the time through which every partition is archived.
            var marked: Set<String> = []
            for folder in closed.map(archive.layout.absolute) where fs.entryKind(folder + "/" + Self.marker) == nil {
                try fs.create(folder + "/" + Self.marker, mode: job.archive.fileMode).close()
                marked.insert(folder)
            }
            for folder in marked.sorted() { try fs.syncDirectory(folder) }
            report.marked = marked.count
            let time = Watermark(through: formatRFC3339(microseconds: watermark), after: after)
            let saved = (try? fs.read(archive.layout.watermarkFile)).flatMap { $0 }.flatMap {
                try? JSONDecoder().decode(Watermark.self, from: Data($0))
            }
            if saved != time {
                try fs.replaceAtomically(archive.layout.watermarkFile, json: time, mode: job.archive.fileMode)
            }
        }
        if !dryRun, let next, next != mark {
            try fs.replaceAtomically(archive.layout.compactedFile, json: next, mode: job.archive.fileMode)
        }
        if !dryRun, let warning = LiveFiles(archive: archive).refresh() { report.skipped.append(warning) }
        return report
    }

    /// The groups to compact, the watermark, notes on blobs left as they are, and the mark for
    /// the next compaction. `newest`: per partition, the newest time archived before these lines.
    func plan(_ manifest: Manifest, targetSize: Int64, after: TimeInterval, newest known: [String: Int64]) -> (
        [Group], Int64?, [String], CompactionMark?, [String]
    ) {
        let entries = manifest.entries
        let replaced = manifest.replacedSeqs.union(manifest.prunedSeqs)
        let lastEpoch = entries.lastIndex { $0.kind == .epoch && $0.lineage == "live" } ?? -1
        let live = entries[(lastEpoch + 1)...].filter { $0.lineage == "live" && $0.namesBlob }
        // How far in time each partition of the live token is archived.
        let liveCursors = manifest.liveToken.flatMap { try? ContinuationToken.decode($0) }?.cursors ?? [:]
        let partitions = Array(liveCursors.keys)
        var newest = known
        for entry in live {
            guard let part = entry.part, let ts = entry.maxTs.flatMap(micros) else { continue }
            newest[part] = max(newest[part] ?? .min, ts)
        }
        let watermark =
            partitions.isEmpty || partitions.contains(where: { newest[$0] == nil })
            ? nil : partitions.map { newest[$0]! }.min()
        guard let watermark else {
            let quiet = partitions.filter { newest[$0] == nil }.sorted()
            let held =
                quiet.isEmpty
                ? []
                : [
                    "held back: partition \(quiet.prefix(5).joined(separator: ", "))\(quiet.count > 5 ? " and \(quiet.count - 5) more" : "") has archived no change since the live lineage began: no bucket closes until every partition has"
                ]
            return ([], nil, held, nil, [])
        }
        var skipped: [String] = []
        // A partition that went quiet holds every bucket after its newest change open: say so.
        let day: Int64 = 86_400_000_000
        if let newestOfAll = partitions.map({ newest[$0]! }).max(), newestOfAll - watermark > day {
            let behind = partitions.filter { newestOfAll - newest[$0]! > day }.sorted()
            skipped.append(
                "held back: partition \(behind.prefix(5).joined(separator: ", "))\(behind.count > 5 ? " and \(behind.count - 5) more" : "") last archived a change at \(formatRFC3339(microseconds: watermark)), more than a day behind the newest (\(formatRFC3339(microseconds: newestOfAll))): buckets after it stay open until it moves on"
            )
        }

        // The lines naming each file: a file another line names too is never deleted, unless
        // every line naming it is a live or backfill blob line after the live epoch (a backfill
        // that wrote a lost blob again, with the same name): those are compacted together.
        var naming: [String: Int] = [:]
        var shared: [String: Bool] = [:]  // true: every line naming it can go with it
        let afterEpoch = entries.indices.contains(lastEpoch + 1) ? entries[lastEpoch + 1].seq : .max
        for entry in entries where entry.namesBlob && !replaced.contains(entry.seq) {
            guard let path = entry.path else { continue }
            naming[path, default: 0] += 1
            let foldable =
                entry.kind == .blob && entry.seq >= afterEpoch
                && (entry.lineage == "live" || entry.lineage.hasPrefix("backfill-"))
            shared[path] = (shared[path] ?? true) && foldable
        }
        func alone(_ path: String) -> Bool { naming[path, default: 0] == 1 || shared[path] == true }
        let baseSeq = manifest.entries.first?.seq ?? 1
        func between(_ from: Int64, _ to: Int64) -> ArraySlice<ManifestEntry> {
            let low = Int(from - baseSeq) + 1
            let high = Int(to - baseSeq)
            guard low >= 0, high <= entries.count, low < high else { return [] }
            return entries[low..<high]
        }
        var byFolder: [String: [ManifestEntry]] = [:]
        var order: [String] = []
        // Compact lines are compacted again only to convert them to another format.
        for entry in live
        where (entry.kind == .blob || (converting && entry.kind == .compact)) && !replaced.contains(entry.seq) {
            guard let path = entry.path, let part = entry.part else { continue }
            let key = part + "\u{0}" + parentDirectory(of: path)
            if byFolder[key] == nil { order.append(key) }
            byFolder[key, default: []].append(entry)
        }
        // Backfill blob lines per partition and folder, to fold into the runs whose range holds them.
        var backfilled: [String: [ManifestEntry]] = [:]
        for entry in entries[(lastEpoch + 1)...]
        where entry.kind == .blob && entry.lineage.hasPrefix("backfill-") && !replaced.contains(entry.seq) {
            guard let path = entry.path, let part = entry.part, alone(path),
                accepts(path), entry.firstPos != nil, entry.lastPos != nil
            else { continue }
            backfilled[part + "\u{0}" + parentDirectory(of: path), default: []].append(entry)
        }
        var groups: [Group] = []
        // The next compaction reads from the first line of a bucket not closed yet.
        var open = manifest.tailSeq + 1
        var closed: [String] = []
        for key in order {
            let lines = byFolder[key]!
            let part = String(key[..<key.firstIndex(of: "\u{0}")!])
            let folder = String(key[key.index(after: key.firstIndex(of: "\u{0}")!)...])
            guard let end = bucketEnd(folder) else { continue }  // no hour folders: nothing to compact
            guard end + Int64(after * 1_000_000) <= watermark else {
                open = min(open, lines[0].seq)
                continue
            }
            if closed.last != folder && !closed.contains(folder) { closed.append(folder) }
            guard lines.count > 1 || converting || backfilled[key] != nil else { continue }
            var run: [ManifestEntry] = []
            var runBytes: Int64 = 0
            func close() {
                if let first = run.first?.firstPos, let last = run.last?.lastPos {
                    let folded = (backfilled[key] ?? []).filter { $0.firstPos! >= first && $0.lastPos! <= last }
                    let converts = converting && run.contains { Compression.of(path: $0.path!) != target }
                    if run.count > 1 || !folded.isEmpty || converts {
                        groups.append(Group(folder: folder, partition: part, lines: run, folded: folded))
                    }
                }
                run = []
                runBytes = 0
            }
            for line in lines {
                // Next in the feed, and next in the manifest but for other lines of this
                // partition: a line of another partition (or a topology, epoch or gap-ack line)
                // in between is a boundary `cat --from/--until` can name, and the order `cat`
                // prints partitions in; a compacted blob must not span it.
                let joins =
                    run.last.map { previous in
                        cursor(previous.toToken, part) != nil
                            && cursor(previous.toToken, part) == cursor(line.fromToken, part)
                            && (converting || Compression.of(path: previous.path!) == Compression.of(path: line.path!))
                            && !between(previous.seq, line.seq).contains { $0.part != part || !$0.namesBlob }
                    } ?? true
                if !alone(line.path!) || !accepts(line.path!) {
                    close()
                    skipped.append("\(line.path!): another line names it too, or other compression settings")
                    continue
                }
                if !joins || (runBytes + (line.bytes ?? 0) > targetSize && !run.isEmpty) { close() }
                run.append(line)
                runBytes += line.bytes ?? 0
            }
            close()
        }
        return (groups, watermark, skipped, mark(manifest, from: open, newest: known), closed)
    }

    /// The mark for the next compaction: read from `open` on; the times before it remembered.
    func mark(_ manifest: Manifest, from open: Int64, newest known: [String: Int64]) -> CompactionMark {
        let lastEpoch = manifest.entries.lastIndex { $0.kind == .epoch && $0.lineage == "live" } ?? -1
        var before = known
        for entry in manifest.entries[(lastEpoch + 1)...]
        where entry.seq < open && entry.lineage == "live" && entry.namesBlob {
            guard let part = entry.part, let ts = entry.maxTs.flatMap(micros) else { continue }
            before[part] = max(before[part] ?? .min, ts)
        }
        let prev = manifest.entries.first(where: { $0.seq == open })?.prev ?? manifest.tailHash
        return CompactionMark(fromSeq: open, fromPrev: prev, newest: before)
    }

    /// Writes one group's blob and commits its `compact` line, then deletes what it replaced.
    func write(_ group: Group, into archive: JobArchive) throws -> ManifestEntry {
        try commit(group, try prepare(group, into: archive), into: archive)
    }

    /// A group's blob, written and fsynced in its temp file, not yet placed.
    struct Prepared {
        var writer: BlobWriter
        var result: BlobWriter.Result
        var records: Int64
    }

    /// Reads the group's blobs and writes the new one to a temp file: the work two groups can
    /// do at once (on two cores), each with its own temp file and encoder.
    func prepare(_ group: Group, into archive: JobArchive) throws -> Prepared {
        let first = group.lines.first!
        let compression = target
        guard let firstPos = first.firstPos.flatMap(Position.init) else {
            throw FeedArchiveError.data(path: first.path, message: "manifest seq \(first.seq) has no first position")
        }
        let writer = try archive.beginBlob(
            relativeDirectory: group.folder, partition: group.partition, first: firstPos, compression: compression,
            level: job.archive.level, workers: job.archive.workers ?? 1)
        var records: Int64 = 0
        let result = try written(writer) {
            for line in group.lines {
                records += try copy(line, archive: archive, into: writer)
            }
        }
        return Prepared(writer: writer, result: result, records: records)
    }

    /// Fills a new blob and ends it; on any failure its temp file goes.
    func written(_ writer: BlobWriter, _ fill: () throws -> Void) throws -> BlobWriter.Result {
        do {
            try fill()
            return try writer.finish()
        } catch {
            writer.abort(fs: fs)
            throw error
        }
    }

    /// Places a prepared blob and commits its `compact` line, then deletes what it replaced
    /// (one group at a time, in order).
    func commit(_ group: Group, _ prepared: Prepared, into archive: JobArchive) throws -> ManifestEntry {
        let first = group.lines.first!
        let last = group.lines.last!
        let (writer, result, records) = (prepared.writer, prepared.result, prepared.records)
        let name =
            sanitizePathComponent(group.partition) + "_" + first.firstPos! + "_" + last.lastPos!
            + target.fileExtension
        let placed = try archive.placeBlob(writer, result: result, relativePath: group.folder + "/" + name)
        var entry = ManifestEntry(
            kind: .compact, lineage: "live", part: group.partition, path: placed, sha256: result.sha256,
            bytes: result.bytes, rawBytes: result.rawBytes, records: records, firstPos: first.firstPos,
            lastPos: last.lastPos, fromToken: first.fromToken, toToken: last.toToken,
            minTs: group.lines.compactMap(\.minTs).min { (micros($0) ?? 0) < (micros($1) ?? 0) },
            maxTs: group.lines.compactMap(\.maxTs).max { (micros($0) ?? 0) < (micros($1) ?? 0) },
            run: archive.runID)
        entry.replaces = group.lines.map(\.seq)
        entry.replacedBytes = group.lines.reduce(0) { $0 + ($1.bytes ?? 0) }
        entry.transform = Self.commonTransform(group.lines)
        try archive.appendManifestLine(entry)  // the commit point
        for line in group.lines where line.path != placed {
            try fs.remove(archive.layout.absolute(line.path!))
        }
        try fs.syncDirectory(archive.layout.absolute(group.folder))
        return entry
    }

    /// Writes one group with backfill lines folded in: the intact blobs of both lineages merged
    /// in feed order, each change once (a change a later blob holds again is a duplicate and
    /// left out), and commits its `compact` line naming every line of the group, a missing or
    /// damaged live blob's among them once the others cover its range. The blobs must chain
    /// from the first live line's `from_token` cursor to the last one's last position, as
    /// continuity proves it: a change in none of them (a gap) is a data error and the bucket
    /// stays as it is.
    func fold(_ group: Group, into archive: JobArchive) throws -> ManifestEntry {
        let first = group.lines.first!
        let last = group.lines.last!
        let compression = target
        guard let firstPos = first.firstPos.flatMap(Position.init), let lastPos = last.lastPos else {
            throw FeedArchiveError.data(path: first.path, message: "manifest seq \(first.seq) has no positions")
        }
        let part = group.partition
        var intact: [(entry: ManifestEntry, data: [UInt8])] = []
        for line in group.all {
            if let data = try? decoded(line, archive: archive) { intact.append((line, data)) }
        }
        intact.sort { ($0.entry.firstPos!, $1.entry.lastPos!) < ($1.entry.firstPos!, $0.entry.lastPos!) }
        let writer = try archive.beginBlob(
            relativeDirectory: group.folder, partition: part, first: firstPos, compression: compression,
            level: job.archive.level, workers: job.archive.workers ?? 1)
        var records: Int64 = 0
        var rawBytes: Int64 = 0
        let result = try written(writer) {
            var reached: Set<String> = [cursor(first.fromToken, part) ?? ""]
            var frontier: [UInt8] = []
            for (entry, data) in intact {
                guard let from = cursor(entry.fromToken, part), let to = cursor(entry.toToken, part),
                    reached.contains(from)
                        || (!frontier.isEmpty && !frontier.lexicographicallyPrecedes(Array(entry.firstPos!.utf8)))
                else {
                    throw FeedArchiveError.data(
                        path: archive.layout.absolute(entry.path!),
                        message:
                            "changes before it are in no intact blob of the bucket (a gap): it cannot be folded",
                        hint:
                            "nothing was changed; `feedarchive verify \(job.name) --full` names the backfill that mends it"
                    )
                }
                var line = 0
                try data.withUnsafeBufferPointer { buffer in
                    for record in buffer.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast() {
                        line += 1
                        guard let position = ArchiveReader.position(in: ArraySlice(record)) else {
                            throw FeedArchiveError.data(
                                path: archive.layout.absolute(entry.path!),
                                message: "line \(line) does not start with the envelope's pos")
                        }
                        guard frontier.isEmpty || frontier.lexicographicallyPrecedes(position) else { continue }
                        frontier = Array(position)
                        let start = record.startIndex
                        try writer.append(
                            raw: UnsafeRawBufferPointer(
                                UnsafeBufferPointer(rebasing: buffer[start..<(record.endIndex + 1)])))
                        records += 1
                        rawBytes += Int64(record.count + 1)
                    }
                }
                reached.insert(to)
            }
            guard frontier == Array(lastPos.utf8) else {
                throw FeedArchiveError.data(
                    path: archive.layout.absolute(last.path!),
                    message:
                        "the intact blobs of the bucket end before its last position \(lastPos) (a gap): it cannot be folded",
                    hint:
                        "nothing was changed; `feedarchive verify \(job.name) --full` names the backfill that mends it")
            }
        }
        let name = sanitizePathComponent(part) + "_" + first.firstPos! + "_" + lastPos + compression.fileExtension
        let placed = try archive.placeBlob(writer, result: result, relativePath: group.folder + "/" + name)
        let all = group.all
        var entry = ManifestEntry(
            kind: .compact, lineage: "live", part: part, path: placed, sha256: result.sha256,
            bytes: result.bytes, rawBytes: result.rawBytes, records: records, firstPos: first.firstPos,
            lastPos: lastPos, fromToken: first.fromToken, toToken: last.toToken,
            minTs: all.compactMap(\.minTs).min { (micros($0) ?? 0) < (micros($1) ?? 0) },
            maxTs: all.compactMap(\.maxTs).max { (micros($0) ?? 0) < (micros($1) ?? 0) },
            run: archive.runID)
        entry.replaces = all.map(\.seq)
        entry.replacedBytes = all.reduce(0) { $0 + ($1.bytes ?? 0) }
        entry.transform = Self.commonTransform(all)
        let replacedRecords = all.reduce(Int64(0)) { $0 + ($1.records ?? 0) }
        let replacedRaw = all.reduce(Int64(0)) { $0 + ($1.rawBytes ?? 0) }
        if replacedRecords != records { entry.replacedRecords = replacedRecords }
        if replacedRaw != rawBytes { entry.replacedRawBytes = replacedRaw }
        try archive.appendManifestLine(entry)  // the commit point
        var folders: Set<String> = [group.folder]
        for line in all where line.path != placed {
            try fs.remove(archive.layout.absolute(line.path!))
            folders.insert(parentDirectory(of: line.path!))
        }
        for folder in folders.sorted() { try fs.syncDirectory(archive.layout.absolute(folder)) }
        return entry
    }

    /// One blob's records, checked against its line (size, SHA-256, record count): a missing
    /// or damaged blob is a data error.
    func decoded(_ line: ManifestEntry, archive: JobArchive) throws -> [UInt8] {
        let path = archive.layout.absolute(line.path!)
        guard let bytes = try fs.read(path), Int64(bytes.count) == line.bytes,
            hexString(SHA256.hash(data: bytes)) == line.sha256, let compression = Compression.of(path: path),
            let data = try? compression.makeDecoder().decodeAll(bytes),
            Int64(data.count) == line.rawBytes, data.last == 0x0A || data.isEmpty,
            Int64(data.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }) == line.records
        else {
            throw FeedArchiveError.data(path: path, message: "missing, or differs from its manifest line")
        }
        return data
    }

    /// Streams one blob's records into `writer`, checking its size, SHA-256 and record count
    /// against its line first: a missing or damaged blob is a data error (65), and its bucket
    /// is left as it is.
    func copy(_ line: ManifestEntry, archive: JobArchive, into writer: BlobWriter) throws
        -> Int64
    {
        let path = archive.layout.absolute(line.path!)
        guard let bytes = try fs.read(path) else {
            throw FeedArchiveError.data(
                path: path, message: "the blob named by manifest seq \(line.seq) is missing",
                hint: "nothing was changed; run `feedarchive verify \(job.name) --full` for the full picture")
        }
        guard Int64(bytes.count) == line.bytes, hexString(SHA256.hash(data: bytes)) == line.sha256 else {
            throw FeedArchiveError.data(
                path: path, message: "the blob differs from its manifest line (size or SHA-256)",
                hint: "nothing was changed; run `feedarchive verify \(job.name) --full --deep` for the full picture")
        }
        var records: Int64 = 0
        var endsLine = true
        guard let compression = Compression.of(path: path) else {
            throw FeedArchiveError.data(path: path, message: "not a blob name this version reads")
        }
        let decoder = try compression.makeDecoder()
        do {
            let take: ByteSink = { decoded in
                records += countNewlines(decoded)
                if let lastByte = decoded.last { endsLine = lastByte == 0x0A }
                try writer.append(raw: decoded)
            }
            try bytes.withUnsafeBytes { try decoder.write($0, to: take) }
            try decoder.finish(to: take)
        } catch let error as FeedArchiveError {
            throw error
        } catch {
            throw FeedArchiveError.data(path: path, message: "cannot decode: \(error)")
        }
        guard endsLine, records == line.records else {
            throw FeedArchiveError.data(
                path: path,
                message: "the blob holds \(records) records, its manifest line says \(line.records ?? 0)",
                hint: "nothing was changed; run `feedarchive verify \(job.name) --full --deep` for the full picture")
        }
        return records
    }

    /// Whether a blob of this name is compacted: of the job's compression, or any when
    /// converting.
    func accepts(_ path: String) -> Bool {
        guard let compression = Compression.of(path: path) else { return false }
        return converting || compression == job.archive.compression
    }

    /// The end of the hour a `…/date=YYYY-MM-DD/hour=HH` folder holds, in the job's time zone.
    func bucketEnd(_ folder: String) -> Int64? {
        let parts = folder.split(separator: "/")
        guard parts.count >= 2, parts[parts.count - 2].hasPrefix("date="), parts[parts.count - 1].hasPrefix("hour="),
            let hour = Int(parts[parts.count - 1].dropFirst(5))
        else { return nil }
        let date = parts[parts.count - 2].dropFirst(5).split(separator: "-").compactMap { Int($0) }
        guard date.count == 3 else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: job.archive.timeZone) ?? TimeZone(identifier: "UTC")!
        guard let start = calendar.date(from: DateComponents(year: date[0], month: date[1], day: date[2], hour: hour))
        else { return nil }
        // The first hour after it that is another bucket: on the night clocks go back, the
        // folder of the repeated hour holds two hours.
        var bucketer = TimeBucketer(timeZone: job.archive.timeZone)
        let micros = Int64(start.timeIntervalSince1970) * 1_000_000
        let bucket = bucketer.bucket(micros)
        var end = micros + 3_600_000_000
        while bucketer.bucket(end) <= bucket && end < micros + 3 * 3_600_000_000 { end += 3_600_000_000 }
        return end
    }

    private func micros(_ text: String) -> Int64? {
        Array(text.utf8).withUnsafeBufferPointer { parseTimestampMicros($0) }
    }

    private func cursor(_ token: String?, _ part: String) -> String? {
        token.flatMap { try? ContinuationToken.decode($0) }?.cursors[part]
    }
}

/// The newlines in `bytes` (memchr jumps from one to the next: records are hundreds of bytes).
func countNewlines(_ bytes: UnsafeRawBufferPointer) -> Int64 {
    guard var cursor = bytes.baseAddress else { return 0 }
    var left = bytes.count
    var count: Int64 = 0
    while left > 0, let found = memchr(cursor, 0x0A, left) {
        count += 1
        let step = cursor.distance(to: UnsafeRawPointer(found)) + 1
        cursor += step
        left -= step
    }
    return count
}

/// A value handed to another thread that the code around it keeps from being used by two at
/// once (see where it is used).
struct UncheckedShare<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
