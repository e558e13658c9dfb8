import Foundation

/// One blob retention removes (or would, in a dry run).
public struct PrunedBlob: Sendable {
    public var seq: Int64
    public var path: String
    public var partition: String?
    public var records: Int64
    public var bytes: Int64
    /// The time of its newest change: before the cut.
    public var maxTs: String
}

/// What `feedarchive prune` did, or would do (`dryRun`).
public struct PruneReport: Sendable {
    public var job: String
    public var dryRun: Bool
    /// The cut asked for: blobs whose every change is older are removed.
    public var cut: String
    public var blobs: [PrunedBlob] = []
    /// Files of blobs an earlier prune (or compaction) removed from the manifest's live set
    /// but could not delete (it was stopped).
    public var leftovers: [String] = []
    /// Why nothing, or less than the cut allows, was removed: an unverified range, an open
    /// bucket, an unfinished backfill. Each names the way forward.
    public var held: [String] = []
    /// The `prune` lines committed.
    public var lines: [Int64] = []

    public var records: Int64 { blobs.reduce(0) { $0 + $1.records } }
    public var bytes: Int64 { blobs.reduce(0) { $0 + $1.bytes } }
}

/// `_feedarchive/retention.json`: when `run` (with `retention:` in the job) last applied it, so
/// it reads the whole manifest at most once an hour.
struct RetentionMark: Codable, Equatable {
    var checkedAt: Int64

    enum CodingKeys: String, CodingKey {
        case checkedAt = "checked_at"
    }
}

/// `feedarchive prune`: retention. Removes whole blobs whose every change is older than a cut,
/// and records a `prune` line naming their lines, so `verify` knows those files are gone on
/// purpose while the lines still chain its proof through their ranges (DESIGN.md "Retention").
///
/// It never removes what something still needs:
/// - only lines a clean verify proved (it verifies the lines after the last mark first);
/// - per partition of the live lineage, only a prefix of the feed (the oldest blobs, up to the
///   first one that holds a change at or after the cut): the archive stays one unbroken range;
/// - only blobs of closed buckets (the archive holds changes `after` past the bucket's end in
///   every partition), so an open bucket is never thinned before it is compacted;
/// - nothing while a backfill is unfinished (it may be mending a range the cut would take);
/// - never a file another current line names too.
///
/// The `prune` line is the commit point; the files are deleted after it. Killed at any point,
/// nothing is lost: before the line the archive is as it was, after it the files left are
/// deleted by the next prune or compaction.
public struct Pruner {
    public let job: JobConfig
    public let fs: any FileSystem

    /// Seqs one `prune` line names at most (a first prune of a large archive writes several).
    static let seqsPerLine = 10_000

    public init(job: JobConfig, fs: any FileSystem = PosixFileSystem()) {
        self.job = job
        self.fs = fs
    }

    /// `cut`: microseconds since the epoch. `after`: the grace that closes a bucket (the job's
    /// `compact.after`, else an hour).
    ///
    /// `keeping`: a retention (with `retention:` in the job): whatever the cut, nothing within
    /// that long of the newest archived change goes, so a clock that jumped ahead cannot empty
    /// the archive.
    public func prune(before cut: Int64, after: TimeInterval? = nil, keeping: TimeInterval? = nil, dryRun: Bool = true)
        throws -> PruneReport
    {
        var cut = cut
        let archive = JobArchive(job: job, fs: fs)
        let lock = try archive.openForWriting()
        defer { lock.release() }
        guard fs.entryKind(archive.layout.identityFile) != nil else {
            throw FeedArchiveError.usage("job \(job.name) has no archive yet: run it first")
        }
        var report = PruneReport(job: job.name, dryRun: dryRun, cut: formatRFC3339(microseconds: cut))
        if !dryRun { _ = try archive.recover() }
        let (manifest, damage) = try archive.store.read()
        if let damage, !damage.isTornTail {
            throw FeedArchiveError.data(
                path: damage.file, message: "line \(damage.line): \(damage.message)",
                hint: "nothing was removed; `feedarchive verify \(job.name) --full` shows the damage")
        }

        // Files a stopped prune or compaction left behind.
        let removed = manifest.replacedSeqs.union(manifest.prunedSeqs)
        let current = manifest.entries.filter { $0.namesBlob && !removed.contains($0.seq) }
        var naming: [String: Int] = [:]
        for entry in current { if let path = entry.path { naming[path, default: 0] += 1 } }
        var touched: Set<String> = []
        for entry in manifest.entries where removed.contains(entry.seq) {
            guard let path = entry.path, naming[path] == nil, !report.leftovers.contains(path),
                fs.entryKind(archive.layout.absolute(path)) == .file
            else { continue }
            report.leftovers.append(path)
            if !dryRun {
                try fs.remove(archive.layout.absolute(path))
                touched.insert(parentDirectory(of: path))
            }
        }

        // An unfinished backfill may be mending a range the cut would take.
        let plans = archive.layout.metaDirectory + "/backfill"
        for name in (try fs.list(plans) ?? []).sorted() where name.hasSuffix(".json") {
            guard let bytes = try fs.read(plans + "/" + name),
                let plan = try? JSONDecoder().decode(BackfillPlan.self, from: Data(bytes))
            else {
                // An unreadable plan may be an unfinished backfill's: nothing goes until a
                // person has looked (backfill refuses it too).
                report.held.append(
                    "the backfill plan \(plans)/\(name) cannot be read: it may belong to an unfinished backfill; repair or remove it, then prune"
                )
                continue
            }
            if try !plan.isComplete(in: manifest) {
                report.held.append(
                    "backfill \(plan.id) (lineage \(plan.lineage), created \(plan.createdAt)) is unfinished: it may be mending a range the cut would remove; finish it (the same `feedarchive backfill` command resumes it), then prune"
                )
            }
        }

        // Only what a clean verify proved: verify the lines after the last mark first.
        var proven = VerifiedMark.load(from: archive.layout.verifiedFile, fs: fs)?.fast
        if report.held.isEmpty, proven.map({ $0.manifestSeq < manifest.tailSeq }) ?? true {
            let verified = try Verifier(job: job, fs: fs).verify(deep: false, full: false)
            if verified.isClean {
                proven = VerifiedMark.load(from: archive.layout.verifiedFile, fs: fs)?.fast
            } else {
                report.held.append(
                    "verify found \(verified.problems.count) problems (the first: \(verified.problems[0].path): \(verified.problems[0].message)): prune removes only what a clean verify proved; `feedarchive verify \(job.name)` lists them"
                )
            }
        }
        let limit = proven?.manifestSeq ?? 0
        if report.held.isEmpty && limit == 0 {
            report.held.append(
                "no clean verify could be recorded (is the archive read-only?): `feedarchive verify \(job.name)` first")
        }

        // Closed buckets only: the compaction's watermark less its grace.
        let compactor = Compactor(job: job, fs: fs)
        let grace = after ?? job.compaction?.after ?? 3600
        let (_, watermark, notes, _, _) = compactor.plan(manifest, targetSize: .max, after: grace, newest: [:])
        // A quiet partition holds the watermark back: what that keeps is said, not silent.
        let quiet = notes.filter { $0.hasPrefix("held back") }
        if report.held.isEmpty && watermark == nil {
            report.held +=
                quiet.isEmpty
                ? [
                    "a partition of the live token has archived no change yet, so no bucket is closed: prune after it has"
                ]
                : quiet
        }
        guard report.held.isEmpty, let watermark else {
            try syncAndTidy(touched, archive: archive)
            return report
        }
        let closedThrough = watermark - Int64(grace * 1_000_000)
        if let keeping, let newest = current.compactMap({ $0.maxTs.flatMap(micros) }).max(),
            newest - Int64(keeping * 1_000_000) < cut
        {
            let asked = cut
            cut = newest - Int64(keeping * 1_000_000)
            if asked - cut > 86_400_000_000 {
                report.held.append(
                    "the newest archived change is from \(formatRFC3339(microseconds: newest)), more than a day before the clock: retention counts from it, so only what is older than \(formatRFC3339(microseconds: cut)) goes (is the clock ahead, or the feed quiet?)"
                )
            }
        }
        if cut > closedThrough { report.held += quiet }

        func eligible(_ entry: ManifestEntry) -> Bool {
            guard entry.seq <= limit, let path = entry.path, naming[path] == 1,
                let ts = entry.maxTs.flatMap(micros), ts < cut, ts < closedThrough
            else { return false }
            if let end = compactor.bucketEnd(parentDirectory(of: path)), end > closedThrough { return false }
            return true
        }
        // Per live lineage (the lines between two live epochs: positions may start over at an
        // epoch) and partition, the oldest lines in feed order up to the first to keep: only a
        // prefix of each is ever removed. `chosen` is in that order, so prune lines written one
        // after another each leave a prefix removed.
        var chosen: [ManifestEntry] = []
        var segment = 0
        var segmentOf: [Int64: Int] = [:]
        for entry in manifest.entries {
            if entry.kind == .epoch && entry.lineage == "live" { segment += 1 }
            segmentOf[entry.seq] = segment
        }
        var groups: [String: [(ManifestEntry, Position, Position)]] = [:]
        var unplaced: Set<String> = []
        for entry in current {
            guard let part = entry.part else { continue }
            let key = "\(segmentOf[entry.seq] ?? 0)\u{0}" + part
            guard let first = entry.firstPos.flatMap(Position.init), let last = entry.lastPos.flatMap(Position.init)
            else {
                unplaced.insert(key)
                continue
            }
            groups[key, default: []].append((entry, first, last))
        }
        var sharedNoted = false
        for key in groups.keys.sorted() where !unplaced.contains(key) {
            let sorted = groups[key]!.sorted { ($0.1, $1.2) < ($1.1, $0.2) }
            for (entry, _, _) in sorted {
                guard eligible(entry) else {
                    // A file two lines name (a backfill that wrote it again) stops the prefix:
                    // safe, but with retention and no compaction the archive would grow.
                    if let path = entry.path, naming[path, default: 0] > 1, !sharedNoted,
                        entry.maxTs.flatMap(micros).map({ $0 < cut }) == true
                    {
                        sharedNoted = true
                        report.held.append(
                            "\(path) is named by \(naming[path]!) manifest lines (a backfill wrote it again): prune stops before it; `feedarchive compact \(job.name)` folds them into one, then prune"
                        )
                    }
                    break
                }
                chosen.append(entry)
            }
        }
        report.blobs = chosen.map {
            PrunedBlob(
                seq: $0.seq, path: $0.path!, partition: $0.part, records: $0.records ?? 0, bytes: $0.bytes ?? 0,
                maxTs: $0.maxTs ?? "")
        }
        guard !dryRun, !chosen.isEmpty else {
            try syncAndTidy(touched, archive: archive)
            return report
        }

        // The commit point: the prune lines, then the checkpoint at the new tail.
        for start in stride(from: 0, to: chosen.count, by: Self.seqsPerLine) {
            let part = chosen[start..<min(chosen.count, start + Self.seqsPerLine)]
            var line = ManifestEntry(
                kind: .prune, lineage: "live", rawBytes: part.reduce(0) { $0 + ($1.rawBytes ?? 0) },
                records: part.reduce(0) { $0 + ($1.records ?? 0) },
                minTs: part.compactMap(\.minTs).min { (micros($0) ?? 0) < (micros($1) ?? 0) },
                maxTs: part.compactMap(\.maxTs).max { (micros($0) ?? 0) < (micros($1) ?? 0) },
                run: archive.runID, reason: "retention: blobs before \(report.cut)")
            line.replaces = part.map(\.seq).sorted()
            line.replacedBytes = part.reduce(0) { $0 + ($1.bytes ?? 0) }
            try archive.appendManifestLine(line)
            report.lines.append(archive.manifest.tailSeq)
        }
        try archive.touchCheckpoint()
        for entry in chosen {
            try fs.remove(archive.layout.absolute(entry.path!))
            touched.insert(parentDirectory(of: entry.path!))
        }
        try syncAndTidy(touched, archive: archive)
        if let warning = LiveFiles(archive: archive).refresh() { report.held.append(warning) }
        return report
    }

    /// What `run` calls with `retention:` in the job: a prune with the cut `retention` before
    /// now, when the last one is an hour old or more (nil when it is not due).
    public func pruneIfDue(retention: TimeInterval, now: Date = Date()) throws -> PruneReport? {
        let layout = ArchiveLayout(root: job.archive.root, job: job.name)
        let nowMicros = Int64(now.timeIntervalSince1970 * 1_000_000)
        if let bytes = try? fs.read(layout.retentionFile),
            let mark = try? JSONDecoder().decode(RetentionMark.self, from: Data(bytes)),
            nowMicros - mark.checkedAt < 3_600_000_000, mark.checkedAt <= nowMicros
        {
            return nil
        }
        let report = try prune(before: nowMicros - Int64(retention * 1_000_000), keeping: retention, dryRun: false)
        try fs.replaceAtomically(
            layout.retentionFile, json: RetentionMark(checkedAt: nowMicros), mode: job.archive.fileMode)
        return report
    }

    /// Fsyncs the folders files were deleted from; a folder left with nothing but its
    /// `_SUCCESS` marker goes too (and a date folder left empty), so years of retention do not
    /// leave thousands of empty folders for readers to walk.
    private func syncAndTidy(_ folders: Set<String>, archive: JobArchive) throws {
        var parents: Set<String> = []
        for folder in folders.sorted() {
            let absolute = archive.layout.absolute(folder)
            let names = try fs.list(absolute) ?? []
            if names.allSatisfy({ $0 == Compactor.marker }), folder.hasPrefix("data/") {
                for name in names { try fs.remove(absolute + "/" + name) }
                if rmdir(absolute) == 0 {
                    parents.insert(parentDirectory(of: folder))
                    continue
                }
            }
            try fs.syncDirectory(absolute)
        }
        for parent in parents.sorted() {
            let absolute = archive.layout.absolute(parent)
            if parent != "data", parent.hasPrefix("data/"), (try fs.list(absolute) ?? []).isEmpty, rmdir(absolute) == 0
            {
                try fs.syncDirectory(parentDirectory(of: absolute))
            } else if fs.isDirectory(absolute) {
                try fs.syncDirectory(absolute)
            }
        }
    }

    private func micros(_ text: String) -> Int64? {
        Array(text.utf8).withUnsafeBufferPointer { parseTimestampMicros($0) }
    }
}
