import Foundation

/// A replay job file: which archive it reads and the target it keeps up to date.
///
/// ```yaml
/// name: orders-replica
/// archive_job: orders.yaml      # the archive job whose archive is read (never its source)
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
        let target = try root.required("target").mapping("target")
        let kind = try target.required("kind").string("target.kind")
        try root.finish()
        return ReplayJob(
            name: name, file: path, archive: try JobConfig.load(path: archivePath), targetKind: kind,
            target: target.node)
    }
}

/// One change as replay applies it: its place, what happened, the key, the document after.
public struct ReplayChange {
    public var part: String
    public var pos: String
    /// `c`, `u`, `r`, `w` (upsert), `d` (delete), `t` (truncate).
    public var op: UInt8
    /// The key as the envelope holds it (JSON text).
    public var key: ArraySlice<UInt8>
    /// The document after the change (JSON text), nil for `null`.
    public var after: ArraySlice<UInt8>?
    public var ts: Int64?
}

/// Where a replay writes. Each `apply` is one transaction holding both the changes and the
/// positions they reach, so a killed replay resumes exactly where it committed.
public protocol ReplayTarget {
    /// Per partition, the position of the last change applied (read in the transaction that
    /// applies the next ones).
    func applied() throws -> [String: String]
    /// In one transaction: changes after what `applied()` says (the target filters again
    /// inside it, so two replays of one target never apply a change twice), and the new
    /// positions. Returns how many changes it applied.
    func apply(_ changes: [ReplayChange]) throws -> Int
    /// `--from-scratch`: the rows and the positions go.
    func reset() throws
}

/// What a replay did.
public struct ReplaySummary: Sendable {
    public var blobs = 0
    public var applied = 0
    /// Changes at or after `--until` that were left for a later replay.
    public var held = 0
}

/// `feedarchive replay`: applies the archive's changes (live lineage, feed order per partition,
/// as `cat` reads them) to a target after the positions it has applied: `c`/`u`/`r`/`w` upsert
/// by key, `d` deletes by key, `t` empties the table. It reads the manifest and the blobs,
/// never the source. `until`: a partition stops at its first change stamped at or after it,
/// so the target holds the state of the source at that moment.
public struct Replayer {
    public let job: ReplayJob
    public let target: any ReplayTarget

    public init(job: ReplayJob, target: any ReplayTarget) {
        self.job = job
        self.target = target
    }

    public func run(until: Int64? = nil, fromScratch: Bool = false) throws -> ReplaySummary {
        if fromScratch { try target.reset() }
        var summary = ReplaySummary()
        let archive = JobArchive(job: job.archive)
        guard fs(archive).isDirectory(archive.layout.metaDirectory) else {
            throw FeedArchiveError.usage("job \(job.archive.name) has no archive yet: run it first")
        }
        let (manifest, damage) = try archive.store.read()
        if let damage, !damage.isTornTail {
            throw FeedArchiveError.data(path: damage.file, message: "line \(damage.line): \(damage.message)")
        }
        let applied = try target.applied()
        // Not yet handled, so refused rather than skipped: positions that start over at a
        // second live epoch, and ranges retention removed that the target has not applied.
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
        var stopped: Set<String> = []
        for entry in manifest.currentLines() where entry.namesBlob && entry.lineage == "live" {
            guard let path = entry.path, let part = entry.part, !stopped.contains(part),
                let compression = Compression.of(path: path)
            else { continue }
            if let done = applied[part], let last = entry.lastPos, last <= done { continue }
            let absolute = archive.layout.absolute(path)
            guard let bytes = try fs(archive).read(absolute) else {
                throw FeedArchiveError.data(
                    path: absolute, message: "the blob named by manifest seq \(entry.seq) is missing",
                    hint: "`feedarchive verify \(job.archive.name) --full` names the backfill that mends it")
            }
            let decoded: [UInt8]
            do {
                decoded = try compression.makeDecoder().decodeAll(bytes)
            } catch {
                throw FeedArchiveError.data(path: absolute, message: "cannot decode: \(error)")
            }
            var changes: [ReplayChange] = []
            try decoded.withUnsafeBufferPointer { buffer in
                var start = 0
                var number = 0
                while start < buffer.count {
                    let end =
                        memchr(buffer.baseAddress! + start, 0x0A, buffer.count - start).map {
                            buffer.baseAddress!.distance(to: $0.assumingMemoryBound(to: UInt8.self))
                        } ?? buffer.count
                    number += 1
                    let lineStart = start
                    let line = UnsafeBufferPointer(rebasing: buffer[start..<end])
                    start = end + 1
                    let ranges: [Range<Int>]
                    do {
                        ranges = try EnvelopeFields.split(line)
                    } catch {
                        throw FeedArchiveError.data(path: absolute, message: "line \(number): \(error)")
                    }
                    func field(_ index: Int) -> ArraySlice<UInt8> {
                        decoded[(lineStart + ranges[index].lowerBound)..<(lineStart + ranges[index].upperBound)]
                    }
                    let pos = String(decoding: field(0).dropFirst().dropLast(), as: UTF8.self)
                    if let done = applied[part], pos <= done { continue }
                    let ts = field(3)
                    let micros =
                        ts.first == 0x22
                        ? Array(ts.dropFirst().dropLast()).withUnsafeBufferPointer { parseTimestampMicros($0) } : nil
                    if let until, let micros, micros >= until {
                        stopped.insert(part)
                        summary.held += 1
                        break
                    }
                    let after = field(5)
                    changes.append(
                        ReplayChange(
                            part: part, pos: pos, op: field(2).dropFirst().first ?? 0x75, key: field(4),
                            after: after.elementsEqual("null".utf8) ? nil : after, ts: micros))
                }
            }
            if !changes.isEmpty { summary.applied += try target.apply(changes) }
            summary.blobs += 1
        }
        return summary
    }

    private func fs(_ archive: JobArchive) -> any FileSystem { archive.fs }
}
