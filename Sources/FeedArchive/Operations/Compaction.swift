import Crypto
import Foundation

/// One compacted blob: the blobs of one hour folder and partition it replaces, in feed order.
public struct CompactedBlob: Sendable {
    public var folder: String
    public var partition: String
    /// The manifest seqs of the lines replaced.
    public var replaces: [Int64]
    public var records: Int64
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
    }

    public func compact(targetSize: Int64 = 256 << 20, after: TimeInterval = 3600, dryRun: Bool = false) throws
        -> CompactionReport
    {
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
        if let known = mark, known.format == CompactionMark.format, known.fromSeq <= archive.manifest.tailSeq + 1 {
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

        let (groups, watermark, skipped, next, closed) = plan(
            manifest, targetSize: targetSize, after: after, newest: mark?.newest ?? [:])
        report.watermark = watermark.map { formatRFC3339(microseconds: $0) }
        report.skipped = skipped
        for group in groups {
            var blob = CompactedBlob(
                folder: group.folder, partition: group.partition, replaces: group.lines.map(\.seq),
                records: group.lines.reduce(0) { $0 + ($1.records ?? 0) },
                bytesBefore: group.lines.reduce(0) { $0 + ($1.bytes ?? 0) }, bytesAfter: 0)
            if !dryRun {
                do {
                    let entry = try write(group, into: archive)
                    blob.path = entry.path
                    blob.bytesAfter = entry.bytes ?? 0
                } catch let error as FeedArchiveError where error.exitCode == 65 {
                    // A missing or damaged blob (verify's to report, a backfill's to mend)
                    // keeps its bucket as it is; the others are compacted.
                    report.skipped.append("\(group.folder), partition \(group.partition): \(error)")
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

        // How many lines name each file: a file another line names too is never deleted.
        var naming: [String: Int] = [:]
        for entry in entries where entry.namesBlob && !replaced.contains(entry.seq) {
            if let path = entry.path { naming[path, default: 0] += 1 }
        }
        let baseSeq = manifest.entries.first?.seq ?? 1
        func between(_ from: Int64, _ to: Int64) -> ArraySlice<ManifestEntry> {
            let low = Int(from - baseSeq) + 1
            let high = Int(to - baseSeq)
            guard low >= 0, high <= entries.count, low < high else { return [] }
            return entries[low..<high]
        }
        var byFolder: [String: [ManifestEntry]] = [:]
        var order: [String] = []
        for entry in live where entry.kind == .blob && !replaced.contains(entry.seq) {
            guard let path = entry.path, let part = entry.part else { continue }
            let key = part + "\u{0}" + parentDirectory(of: path)
            if byFolder[key] == nil { order.append(key) }
            byFolder[key, default: []].append(entry)
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
            guard lines.count > 1 else { continue }
            var run: [ManifestEntry] = []
            var runBytes: Int64 = 0
            func close() {
                if run.count > 1 { groups.append(Group(folder: folder, partition: part, lines: run)) }
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
                            && Compression.of(path: previous.path!) == Compression.of(path: line.path!)
                            && !between(previous.seq, line.seq).contains { $0.part != part || !$0.namesBlob }
                    } ?? true
                if naming[line.path!, default: 0] > 1 || Compression.of(path: line.path!) != job.archive.compression {
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
        // Lines from `open` on are read again next time; the times before it are remembered.
        var before = known
        for entry in live where entry.seq < open {
            guard let part = entry.part, let ts = entry.maxTs.flatMap(micros) else { continue }
            before[part] = max(before[part] ?? .min, ts)
        }
        let prev = manifest.entries.first(where: { $0.seq == open })?.prev ?? manifest.tailHash
        return (groups, watermark, skipped, CompactionMark(fromSeq: open, fromPrev: prev, newest: before), closed)
    }

    /// Writes one group's blob and commits its `compact` line, then deletes what it replaced.
    func write(_ group: Group, into archive: JobArchive) throws -> ManifestEntry {
        let first = group.lines.first!
        let last = group.lines.last!
        guard let firstPos = first.firstPos.flatMap(Position.init), let compression = Compression.of(path: first.path!)
        else {
            throw FeedArchiveError.data(path: first.path, message: "manifest seq \(first.seq) has no first position")
        }
        let writer = try archive.beginBlob(
            relativeDirectory: group.folder, partition: group.partition, first: firstPos, compression: compression,
            level: job.archive.level, workers: job.archive.workers ?? 1)
        var records: Int64 = 0
        do {
            for line in group.lines {
                records += try copy(line, archive: archive, compression: compression, into: writer)
            }
        } catch {
            writer.abort(fs: fs)
            throw error
        }
        let result: BlobWriter.Result
        do {
            result = try writer.finish()
        } catch {
            writer.abort(fs: fs)
            throw error
        }
        let name =
            sanitizePathComponent(group.partition) + "_" + first.firstPos! + "_" + last.lastPos!
            + compression.fileExtension
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
        try archive.appendManifestLine(entry)  // the commit point
        for line in group.lines where line.path != placed {
            try fs.remove(archive.layout.absolute(line.path!))
        }
        try fs.syncDirectory(archive.layout.absolute(group.folder))
        return entry
    }

    /// Streams one blob's records into `writer`, checking its size, SHA-256 and record count
    /// against its line first: a missing or damaged blob is a data error (65), and its bucket
    /// is left as it is.
    func copy(_ line: ManifestEntry, archive: JobArchive, compression: Compression, into writer: BlobWriter) throws
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
        let decoder = try compression.makeDecoder()
        do {
            try bytes.withUnsafeBytes { input in
                try decoder.write(input) { decoded in
                    for byte in decoded where byte == 0x0A { records += 1 }
                    if let lastByte = decoded.last { endsLine = lastByte == 0x0A }
                    try writer.append(raw: decoded)
                }
            }
            try decoder.finish()
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
