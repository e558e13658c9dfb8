import Crypto
import Dispatch
import Foundation
import Synchronization

/// One thing `verify` found wrong (or worth saying).
public struct VerifyProblem: Codable, Sendable {
    /// `chain`, `gap`, `missing`, `size`, `hash`, `decode`, `records`, `order`, `range`, `stray`, `checkpoint`.
    public var kind: String
    /// The file (relative to the job root) or manifest place it concerns.
    public var path: String
    public var message: String
    /// The command that mends it, when there is one.
    public var fix: String?
}

/// The result of `feedarchive verify`.
public struct VerifyReport: Codable, Sendable {
    public var job: String
    public var problems: [VerifyProblem] = []
    /// Facts that are not errors: a pending roll-forward, acknowledged gaps.
    public var notes: [String] = []
    public var blobs = 0
    public var records: Int64 = 0
    public var bytes: Int64 = 0
    /// Changes archived more than once (overlapping blob ranges): allowed, counted.
    public var duplicateRanges = 0
    public var deep = false
    /// The manifest seq a verify that continued from the last clean one started after (0: the
    /// whole archive was checked).
    public var after: Int64 = 0
    public var isClean: Bool { problems.isEmpty }
}

/// DESIGN.md "Verify": proves the archive complete from the origin token to the checkpoint.
/// Read-only: it never changes the archive.
public struct Verifier: Sendable {
    public let job: JobConfig
    public let fs: any FileSystem

    public init(job: JobConfig, fs: any FileSystem = PosixFileSystem()) {
        self.job = job
        self.fs = fs
    }

    /// `full: false` continues from the last clean verify of the same depth
    /// (`_feedarchive/verified.json`): the chain from its line on, the blobs of the lines after
    /// it, continuity from its live token. `full: true` checks everything from the origin. A
    /// clean verify moves the mark (when the archive can be written).
    public func verify(deep: Bool, full: Bool = true, progress: (@Sendable (Int, Int) -> Void)? = nil) throws
        -> VerifyReport
    {
        var report = VerifyReport(job: job.name)
        report.deep = deep
        let archive = JobArchive(job: job, fs: fs)
        let layout = archive.layout
        guard fs.isDirectory(layout.metaDirectory) else {
            throw FeedArchiveError.data(
                path: layout.jobRoot, message: "no archive here (no _feedarchive folder): has the job run yet?")
        }
        let savedMark = VerifiedMark.load(from: layout.verifiedFile, fs: fs)
        var checkpointError: String?
        var damage: ManifestDamage?
        var manifest: Manifest
        do {
            archive.checkpoint = try Checkpoint.load(from: layout.checkpointFile, fs: fs)
        } catch let error as FeedArchiveError {
            checkpointError = error.description
        }
        var mark = full ? nil : (deep ? savedMark?.deep : savedMark?.fast)
        if let point = mark {
            (manifest, damage) = try archive.store.readTail(from: point.manifestSeq)
            archive.manifest = manifest
            if manifest.entries.first?.seq != point.manifestSeq
                || archive.hashOfLine(point.manifestSeq) != point.manifestHash
            {
                report.notes.append(
                    "the line the last clean verify reached (manifest seq \(point.manifestSeq)) is not in the manifest as it was: everything was checked"
                )
                mark = nil
            }
        }
        if mark == nil {
            (manifest, damage) = try archive.store.read()
        } else {
            manifest = archive.manifest
        }
        report.after = mark?.manifestSeq ?? 0
        func problem(_ kind: String, _ path: String, _ message: String, fix: String? = nil) {
            report.problems.append(VerifyProblem(kind: kind, path: path, message: message, fix: fix))
        }
        if let damage {
            if damage.isTornTail {
                report.notes.append(
                    "\(damage.file):\(damage.line): torn last line (an append that did not finish); the next run cuts it off"
                )
            } else {
                problem("chain", "\(damage.file):\(damage.line)", damage.message)
            }
        }
        if manifest.tailSeq == 0 {
            problem("chain", layout.manifestDirectory, "the manifest is empty: no epoch line")
        }
        // The lines to prove: all of them, or those after the mark, behind an epoch line that
        // starts the proof at the mark's live token.
        var entries = manifest.entries
        var covered: [String: Position] = [:]
        if let mark {
            entries = Array(entries.dropFirst())
            var start = ManifestEntry(kind: .epoch, lineage: "live", toToken: mark.liveToken, run: "verified")
            start.seq = mark.manifestSeq
            entries.insert(start, at: 0)
            covered = mark.positions.compactMapValues(Position.init)
            report.blobs = mark.blobs
            report.records = mark.records
            report.bytes = mark.bytes
        }

        // Every blob file once: present, right size and hash, and (deep) right contents.
        // A compact line's blob stands for the blobs it replaced: those are not checked, and
        // their files, once deleted, are not missed.
        // Lines a `prune` line names: retention removed their blobs; their lines still carry
        // the proof through their ranges, but their files are not looked for.
        let compactions = entries.filter { $0.kind == .compact }
        let replaced = Set(compactions.flatMap { $0.replaces ?? [] })
        let prunes = entries.filter { $0.kind == .prune }
        let pruned = Set(prunes.flatMap { $0.replaces ?? [] })
        let blobs = entries.filter { $0.namesBlob && !replaced.contains($0.seq) && !pruned.contains($0.seq) }
        let named = Set(entries.filter(\.namesBlob).compactMap(\.path))
        if mark != nil {
            // The mark's totals counted the replaced blobs proven before it.
            // The real lines after the mark (not the epoch line standing for the mark's own).
            let present = Dictionary(entries.dropFirst().map { ($0.seq, $0) }, uniquingKeysWith: { $1 })
            for compaction in compactions {
                let seqs = compaction.replaces ?? []
                let earlier = seqs.filter { present[$0] == nil }
                guard !earlier.isEmpty else { continue }
                let later = seqs.compactMap { present[$0] }
                report.blobs -= earlier.count
                report.records -=
                    (compaction.replacedRecords ?? compaction.records ?? 0) - later.reduce(0) { $0 + ($1.records ?? 0) }
                report.bytes -= (compaction.replacedBytes ?? 0) - later.reduce(0) { $0 + ($1.bytes ?? 0) }
            }
            // Likewise the blobs a prune removed that the mark had counted.
            for prune in prunes {
                let seqs = prune.replaces ?? []
                let earlier = seqs.filter { present[$0] == nil }
                guard !earlier.isEmpty else { continue }
                let later = seqs.compactMap { present[$0] }
                report.blobs -= earlier.count
                report.records -= (prune.records ?? 0) - later.reduce(0) { $0 + ($1.records ?? 0) }
                report.bytes -= (prune.replacedBytes ?? 0) - later.reduce(0) { $0 + ($1.bytes ?? 0) }
            }
        }
        // A compact or prune line's word is checked against the lines it names (those this
        // verify reads): a line that claimed other lines' blobs could hide a loss.
        for found in Self.checkNamedLines(entries: mark == nil ? entries : Array(entries.dropFirst())) {
            problem("chain", found.place, found.message)
        }
        let current = Set(blobs.compactMap(\.path))
        for entry in entries where replaced.contains(entry.seq) {
            guard let path = entry.path, !current.contains(path),
                fs.entryKind(layout.absolute(path)) != nil
            else { continue }
            report.notes.append(
                "\(path): replaced by a compacted blob; `feedarchive compact \(job.name)` deletes it (a compaction stopped before it could)"
            )
        }
        var leftoverPruned = 0
        for entry in entries where pruned.contains(entry.seq) {
            if let path = entry.path, !current.contains(path), fs.entryKind(layout.absolute(path)) != nil {
                leftoverPruned += 1
            }
        }
        if leftoverPruned > 0 {
            report.notes.append(
                "\(leftoverPruned) files of blobs a prune removed are still there (a prune stopped before deleting them); `feedarchive prune \(job.name) --yes` deletes them"
            )
        }
        if let last = prunes.last {
            report.notes.append(
                "\(pruned.count) blobs were removed by retention (\(last.reason ?? "prune"), manifest seq \(last.seq)): their lines still chain the proof, their changes are no longer archived"
            )
        }
        var intact: [String: Bool] = [:]
        var unique: [ManifestEntry] = []
        var seen: Set<String> = []
        for entry in blobs {
            guard let path = entry.path, seen.insert(path).inserted else { continue }  // a backfill may name an existing blob
            unique.append(entry)
            report.blobs += 1
            report.records += entry.records ?? 0
            report.bytes += entry.bytes ?? 0
        }
        // Blobs are independent: check them on every core, collect the findings in order.
        let found = Mutex([[VerifyProblem]](repeating: [], count: unique.count))
        let done = Atomic<Int>(0)
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, unique.count))
        let layoutCopy = layout
        let checks = unique
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for index in stride(from: worker, to: checks.count, by: workers) {
                var problems: [VerifyProblem] = []
                checkBlob(checks[index], path: checks[index].path!, deep: deep, layout: layoutCopy) {
                    kind, path, message, fix in
                    problems.append(VerifyProblem(kind: kind, path: path, message: message, fix: fix))
                }
                found.withLock { $0[index] = problems }
                let count = done.add(1, ordering: .relaxed).newValue
                if worker == 0 { progress?(count, checks.count) }
            }
        }
        var findings = found.withLock { $0 }
        // A compaction or prune that committed while the blobs were read deletes the files its
        // line names: such a blob is no problem. Verify takes no lock; it reads the lines that
        // appeared since it started before it says a blob is missing or damaged.
        var laterRead: [ManifestEntry]?
        func laterLines() -> [ManifestEntry] {
            if let laterRead { return laterRead }
            let lines =
                manifest.tailSeq > 0
                ? ((try? archive.store.readTail(from: manifest.tailSeq))?.0.entries.filter {
                    $0.seq > manifest.tailSeq
                } ?? []) : []
            laterRead = lines
            return lines
        }
        if findings.contains(where: { !$0.isEmpty }) {
            let gone = Set(
                laterLines().filter { $0.kind == .compact || $0.kind == .prune }.flatMap { $0.replaces ?? [] })
            for index in unique.indices where !findings[index].isEmpty && gone.contains(unique[index].seq) {
                findings[index] = []
                report.notes.append(
                    "\(unique[index].path!): replaced by a compaction or removed by a prune while verify ran (a later line names it)"
                )
            }
        }
        for (index, problems) in findings.enumerated() {
            report.problems += problems
            intact[unique[index].path!] = problems.isEmpty
        }
        for entry in entries where pruned.contains(entry.seq) {
            if let path = entry.path, intact[path] == nil { intact[path] = true }
        }
        progress?(blobs.count, blobs.count)

        // Continuity per partition over the union of lineages, from the origin to the checkpoint.
        let continuity = Continuity(
            job: job.name, entries: entries, intact: intact, checkpoint: archive.checkpoint?.token, covered: covered)
        for gap in continuity.gaps {
            problem("gap", gap.place, gap.message, fix: gap.fix)
        }
        report.notes += continuity.notes
        report.duplicateRanges = continuity.duplicates + (mark?.duplicateRanges ?? 0)
        // A damaged or missing blob whose range other blobs cover (a backfill repaired it) is
        // no longer a hole in the archive: say so, but do not fail.
        for entry in blobs {
            guard let path = entry.path, intact[path] == false, let part = entry.part,
                let to = entry.toToken.flatMap({ try? ContinuationToken.decode($0) })?.cursors[part],
                continuity.reached[part]?.contains(to) == true
            else { continue }
            let covered = report.problems.filter { $0.path == path }
            report.problems.removeAll { $0.path == path }
            for problem in covered {
                report.notes.append(
                    "\(path): \(problem.message); its changes are covered by other blobs (repaired by a backfill)")
            }
        }

        var strays =
            if let mark {
                try newStrays(in: blobs, named: named, since: mark.verifiedAt, archive: archive)
            } else {
                try archive.dataFiles().filter { !named.contains($0) }
            }
        if !strays.isEmpty {
            // A blob committed after the manifest was read (a run, or a compaction's new blob).
            let committedSince = Set(laterLines().compactMap(\.path))
            strays.removeAll { committedSince.contains($0) }
        }
        for file in strays where lastComponent(of: file) != Compactor.marker {  // a closed bucket's marker
            problem(
                "stray", file,
                file.hasSuffix(".tmp") ? "temp file of an unfinished blob" : "no manifest line names this file",
                fix: "feedarchive run \(job.name) (recovery moves it to quarantine)")
        }

        // The checkpoint against the manifest tail.
        if let checkpointError {
            problem("checkpoint", layout.checkpointFile, checkpointError)
        } else if let checkpoint = archive.checkpoint {
            if checkpoint.manifestSeq > manifest.tailSeq {
                problem(
                    "checkpoint", layout.checkpointFile,
                    "the checkpoint (manifest seq \(checkpoint.manifestSeq)) is ahead of the manifest (last seq \(manifest.tailSeq))"
                )
            } else if checkpoint.manifestSeq < manifest.tailSeq {
                report.notes.append(
                    "the checkpoint is at manifest seq \(checkpoint.manifestSeq), behind the tail \(manifest.tailSeq): the next run rolls it forward"
                )
            } else if checkpoint.manifestHash != manifest.tailHash {
                problem(
                    "checkpoint", layout.checkpointFile,
                    "the checkpoint's manifest hash does not match the manifest's last line")
            } else if checkpoint.token != (manifest.liveToken ?? mark?.liveToken) {
                problem(
                    "checkpoint", layout.checkpointFile,
                    "the checkpoint token differs from the manifest's last live to_token")
            }
        } else if manifest.tailSeq > 0 {
            report.notes.append("no checkpoint yet: the next run writes it from the manifest")
        }
        if report.isClean && checkpointError == nil && manifest.tailSeq > 0 {
            let point = VerifiedMark.Point(
                manifestSeq: manifest.tailSeq, manifestHash: manifest.tailHash,
                liveToken: manifest.liveToken ?? mark?.liveToken,
                positions: covered.mapValues(\.rawValue).merging(continuity.frontiers.mapValues(\.rawValue)) { $1 },
                blobs: report.blobs, records: report.records, bytes: report.bytes,
                duplicateRanges: report.duplicateRanges,
                verifiedAt: formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970) * 1_000_000))
            var next = savedMark ?? VerifiedMark()
            if deep { next.deep = point }
            next.fast = point
            // A reader without write access still gets its report; the next verify starts over.
            try? next.write(to: layout.verifiedFile, fs: fs, mode: job.archive.fileMode)
        }
        return report
    }

    /// What a `compact` or `prune` line says of the lines it names, against those lines: each
    /// named once, a blob line before it; a compact line's lines one partition's, in feed order,
    /// chained token to token, with its range, tokens, records and bytes their sum; a prune
    /// line's records and bytes theirs.
    static func checkNamedLines(entries: [ManifestEntry]) -> [(place: String, message: String)] {
        var found: [(String, String)] = []
        let bySeq = Dictionary(entries.map { ($0.seq, $0) }, uniquingKeysWith: { $1 })
        var claimed: [Int64: Int64] = [:]
        func cursor(_ token: String?, _ part: String?) -> String? {
            guard let token, let part else { return nil }
            return (try? ContinuationToken.decode(token))?.cursors[part]
        }
        for line in entries where line.kind == .compact || line.kind == .prune {
            let place = "manifest seq \(line.seq) (\(line.kind.rawValue))"
            let seqs = line.replaces ?? []
            guard !seqs.isEmpty else {
                found.append((place, "names no lines"))
                continue
            }
            for seq in seqs {
                if let other = claimed[seq] {
                    found.append((place, "names manifest seq \(seq), which manifest seq \(other) named already"))
                }
                claimed[seq] = line.seq
                if seq >= line.seq { found.append((place, "names manifest seq \(seq), which is not before it")) }
            }
            // Only what this verify read can be checked (an incremental one starts at its mark).
            let named = seqs.compactMap { bySeq[$0] }
            guard named.count == seqs.count else { continue }
            if let bad = named.first(where: { !$0.namesBlob }) {
                found.append((place, "names manifest seq \(bad.seq), a \(bad.kind.rawValue) line, not a blob"))
                continue
            }
            let records = named.reduce(Int64(0)) { $0 + ($1.records ?? 0) }
            let bytes = named.reduce(Int64(0)) { $0 + ($1.bytes ?? 0) }
            let raw = named.reduce(Int64(0)) { $0 + ($1.rawBytes ?? 0) }
            // A folded compaction holds fewer records than the lines it replaced (duplicates
            // removed), and says how many those held.
            let claimedRecords = line.replacedRecords ?? line.records
            let claimedRaw = line.replacedRawBytes ?? line.rawBytes
            if records != claimedRecords || bytes != line.replacedBytes || raw != claimedRaw
                || (line.records ?? 0) > records
            {
                found.append(
                    (
                        place,
                        "says \(claimedRecords ?? -1) records, \(claimedRaw ?? -1) raw and \(line.replacedBytes ?? -1) replaced bytes; the lines it names hold \(records), \(raw) and \(bytes)"
                    ))
            }
            guard line.kind == .compact else { continue }
            // The live lines chain token to token over its whole range; lines of a backfill it
            // folded in lie inside that range.
            let folded = named.filter { $0.lineage != "live" }
            let live = named.filter { $0.lineage == "live" }
            guard let first = live.first, let last = live.last else {
                found.append((place, "replaces no live line"))
                continue
            }
            if folded.contains(where: {
                ($0.firstPos ?? "") < (line.firstPos ?? "") || ($0.lastPos ?? "") > (line.lastPos ?? "")
            }) {
                found.append((place, "a backfill line it replaces reaches outside its range"))
            }
            if seqs != seqs.sorted() || named.contains(where: { $0.part != line.part || !$0.namesBlob })
                || zip(live, live.dropFirst()).contains(where: {
                    cursor($0.0.toToken, line.part) == nil
                        || cursor($0.0.toToken, line.part) != cursor($0.1.fromToken, line.part)
                })
            {
                found.append(
                    (
                        place,
                        "the lines it replaces are not blob lines of partition \(line.part ?? "?") that follow one another in the feed"
                    ))
            }
            if first.firstPos != line.firstPos || last.lastPos != line.lastPos || first.fromToken != line.fromToken
                || last.toToken != line.toToken
            {
                found.append((place, "its range or tokens differ from those of the lines it replaces"))
            }
        }
        return found
    }

    /// Files in the folders of the blobs just checked that no line names and that appeared
    /// since the mark (blobs are never changed after their commit): what a crash between rename
    /// and commit can leave. The whole manifest is read only to clear such a candidate.
    private func newStrays(in blobs: [ManifestEntry], named: Set<String>, since: String, archive: JobArchive) throws
        -> [String]
    {
        let cutoff = (Array(since.utf8).withUnsafeBufferPointer { parseTimestampMicros($0) } ?? 0) / 1_000_000 - 2
        var candidates: [String] = []
        for folder in Set(blobs.compactMap { $0.path.map(parentDirectory(of:)) }).sorted() {
            for name in try fs.list(archive.layout.absolute(folder)) ?? [] {
                let relative = folder + "/" + name
                var info = stat()
                guard !named.contains(relative), lstat(archive.layout.absolute(relative), &info) == 0,
                    (info.st_mode & S_IFMT) != S_IFDIR, Int64(info.st_mtim.tv_sec) >= cutoff
                else { continue }
                candidates.append(relative)
            }
        }
        guard !candidates.isEmpty else { return [] }
        let every = Set(try archive.store.read().0.entries.compactMap(\.path))
        return candidates.filter { !every.contains($0) }
    }

    private func checkBlob(
        _ entry: ManifestEntry, path: String, deep: Bool, layout: ArchiveLayout,
        problem: (String, String, String, String?) -> Void
    ) {
        let absolute = layout.absolute(path)
        guard let size = try? fs.size(absolute) else {
            problem(
                "missing", path,
                "the blob named by manifest seq \(entry.seq) does not exist (its range is listed as a gap with the backfill that mends it)",
                nil)
            return
        }
        if size != entry.bytes {
            problem("size", path, "size \(size) bytes, the manifest says \(entry.bytes ?? -1)", nil)
        }
        guard let compression = Compression.of(path: path) else {
            problem("decode", path, "unknown blob suffix", nil)
            return
        }
        var hasher = SHA256()
        var checker = deep ? BlobContentChecker(entry: entry) : nil
        var chunk = [UInt8](repeating: 0, count: Int(min(max(size, 1), 1 << 20)))
        do {
            let decoder = try compression.makeDecoder()
            let fd = open(absolute, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw FeedArchiveError.io(operation: "open", path: absolute, errno: errno) }
            defer { close(fd) }
            while true {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 { throw FeedArchiveError.io(operation: "read", path: absolute, errno: errno) }
                if count == 0 { break }
                try chunk.withUnsafeBytes { raw in
                    let bytes = UnsafeRawBufferPointer(rebasing: raw[0..<count])
                    hasher.update(bufferPointer: bytes)
                    if checker != nil { try decoder.write(bytes) { checker!.consume($0) } }
                }
            }
            if checker != nil { try decoder.finish { checker!.consume($0) } }
        } catch {
            problem("decode", path, "\(error)", nil)
            return
        }
        let digest = hexString(hasher.finalize())
        if digest != entry.sha256 {
            problem(
                "hash", path,
                "SHA-256 \(digest.prefix(16))… differs from the manifest's \((entry.sha256 ?? "").prefix(16))…: the blob was changed after it was committed",
                nil)
        }
        if var checker {
            checker.finish()
            for message in checker.problems { problem(message.0, path, message.1, nil) }
        }
    }
}

/// Checks decoded blob bytes line by line: valid JSON envelopes, positions ordered and inside
/// the blob's range, the record count and raw size the manifest promised.
struct BlobContentChecker {
    let entry: ManifestEntry
    var partial: [UInt8] = []
    var records: Int64 = 0
    var rawBytes: Int64 = 0
    var previous: [UInt8] = []
    var problems: [(String, String)] = []
    let first: [UInt8]
    let last: [UInt8]

    init(entry: ManifestEntry) {
        self.entry = entry
        first = Array((entry.firstPos ?? "").utf8)
        last = Array((entry.lastPos ?? "").utf8)
    }

    mutating func consume(_ bytes: UnsafeRawBufferPointer) {
        rawBytes += Int64(bytes.count)
        var start = 0
        let buffer = bytes.bindMemory(to: UInt8.self)
        guard let base = buffer.baseAddress else { return }
        func nextNewline(_ from: Int) -> Int? {
            guard from < buffer.count, let found = memchr(base + from, 0x0A, buffer.count - from) else { return nil }
            return base.distance(to: found.assumingMemoryBound(to: UInt8.self))
        }
        while let newline = nextNewline(start) {
            if partial.isEmpty {
                line(UnsafeBufferPointer(rebasing: buffer[start..<newline]))
            } else {
                partial.append(contentsOf: buffer[start..<newline])
                let joined = partial
                partial.removeAll(keepingCapacity: true)
                joined.withUnsafeBufferPointer { line($0) }
            }
            start = newline + 1
        }
        partial.append(contentsOf: buffer[start...])
    }

    private mutating func line(_ text: UnsafeBufferPointer<UInt8>) {
        records += 1
        guard problems.count < 5 else { return }
        guard JSONText.isValid(text) else {
            problems.append(("records", "line \(records) is not a valid JSON envelope"))
            return
        }
        let prefix: StaticString = #"{"pos":""#
        let prefixCount = prefix.utf8CodeUnitCount
        guard text.count > prefixCount, memcmp(text.baseAddress!, prefix.utf8Start, prefixCount) == 0,
            let end = text[prefixCount...].firstIndex(of: 0x22)
        else {
            problems.append(("records", "line \(records) does not start with the envelope's pos"))
            return
        }
        let position = UnsafeBufferPointer(rebasing: text[prefixCount..<end])
        if position.lexicographicallyPrecedes(first) || last.lexicographicallyPrecedes(position) {
            problems.append(
                (
                    "range",
                    "line \(records): position \(String(decoding: position, as: UTF8.self)) is outside [\(entry.firstPos ?? ""), \(entry.lastPos ?? "")]"
                ))
        }
        if !previous.isEmpty && !previous.lexicographicallyPrecedes(position) {
            problems.append(
                (
                    "order",
                    "line \(records): position \(String(decoding: position, as: UTF8.self)) does not follow \(String(decoding: previous, as: UTF8.self))"
                ))
        }
        previous.removeAll(keepingCapacity: true)  // no allocation per record
        previous.append(contentsOf: position)
    }

    mutating func finish() {
        if !partial.isEmpty {
            problems.append(("records", "the last line has no newline"))
        }
        if records != entry.records {
            problems.append(("records", "holds \(records) records, the manifest says \(entry.records ?? -1)"))
        }
        if rawBytes != entry.rawBytes {
            problems.append(("records", "decodes to \(rawBytes) bytes, the manifest says \(entry.rawBytes ?? -1)"))
        }
    }
}
