import Crypto
import Foundation

/// One line of the manifest, the archive's append-only, hash-chained commit log.
public struct ManifestEntry: Codable, Equatable, Sendable {
    /// Kinds of line (DESIGN.md "Manifest line").
    public enum Kind: String, Codable, Sendable {
        case blob, epoch, split, merge
        case gapAck = "gap-ack"
        /// No changes between `from_token` and `to_token` (a source moved on without data:
        /// a PostgreSQL slot advanced past WAL of unpublished tables).
        case heartbeat
        case compact
        /// Retention removed the blobs of the lines `replaces` names (all before a cut in
        /// time); the lines stay, so the proof still chains through their ranges.
        case prune
        /// Dead letters: changes of the range `first_pos`..`last_pos` the job's transform could
        /// not take, each with the reason and its envelope as the source gave it, in a blob under
        /// `_feedarchive/rejected/`. Not a link of the continuity proof: the blob line of the
        /// same range counts them (`rejected`).
        case rejected
    }

    public var seq: Int64
    /// SHA-256 (hex) of the previous line's bytes without its newline; 64 zeros for the first.
    public var prev: String
    public var kind: Kind
    public var lineage: String
    public var part: String?
    /// Blob path relative to the job root.
    public var path: String?
    public var sha256: String?
    public var bytes: Int64?
    public var rawBytes: Int64?
    public var records: Int64?
    public var firstPos: String?
    public var lastPos: String?
    public var fromToken: String?
    public var toToken: String?
    public var minTs: String?
    public var maxTs: String?
    public var createdAt: String
    public var run: String
    /// Why an epoch started or a gap was acknowledged.
    public var reason: String?
    /// A `compact` line: the seqs of the blob lines whose blobs its blob replaces, and their
    /// compressed bytes (the totals subtract them). A `prune` line: the seqs of the lines
    /// whose blobs retention removed, and their compressed bytes (its `records` and
    /// `raw_bytes` are theirs too).
    public var replaces: [Int64]?
    public var replacedBytes: Int64?
    /// A `compact` line that folded overlapping lineages (a backfill and the live range it
    /// mended): the records and raw bytes of the lines it replaced, duplicates included (its
    /// own `records` hold each change once). Left out when they equal its own.
    public var replacedRecords: Int64?
    public var replacedRawBytes: Int64?
    /// The hash of the job's transform section the line's changes were written with (a blob
    /// line of a job with `transform:`).
    public var transform: String?
    /// Changes of the line's range that the transform's filters left out, by filter name.
    public var filtered: [String: Int64]?
    /// Changes of the line's range the transform could not take (in the dead letters).
    public var rejected: Int64?

    /// The line names a blob that holds changes (`blob`, or `compact`).
    public var namesBlob: Bool { kind == .blob || kind == .compact }

    enum CodingKeys: String, CodingKey {
        case seq, prev, kind, lineage, part, path, sha256, bytes
        case rawBytes = "raw_bytes"
        case records
        case firstPos = "first_pos"
        case lastPos = "last_pos"
        case fromToken = "from_token"
        case toToken = "to_token"
        case minTs = "min_ts"
        case maxTs = "max_ts"
        case createdAt = "created_at"
        case run, reason, replaces
        case replacedBytes = "replaced_bytes"
        case replacedRecords = "replaced_records"
        case replacedRawBytes = "replaced_raw_bytes"
        case transform, filtered, rejected
    }

    public init(
        kind: Kind, lineage: String, part: String? = nil, path: String? = nil, sha256: String? = nil,
        bytes: Int64? = nil,
        rawBytes: Int64? = nil, records: Int64? = nil, firstPos: String? = nil, lastPos: String? = nil,
        fromToken: String? = nil, toToken: String? = nil, minTs: String? = nil, maxTs: String? = nil,
        run: String, reason: String? = nil
    ) {
        self.seq = 0
        self.prev = ""
        self.kind = kind
        self.lineage = lineage
        self.part = part
        self.path = path
        self.sha256 = sha256
        self.bytes = bytes
        self.rawBytes = rawBytes
        self.records = records
        self.firstPos = firstPos
        self.lastPos = lastPos
        self.fromToken = fromToken
        self.toToken = toToken
        self.minTs = minTs
        self.maxTs = maxTs
        self.createdAt = formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970) * 1_000_000)
        self.run = run
        self.reason = reason
    }

    /// The line's bytes, keys in DESIGN.md order, no newline.
    public func encodedLine() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(768)
        var first = true
        func key(_ name: String) {
            out.append(first ? 0x7B : 0x2C)
            first = false
            JSONText.appendString(name, to: &out)
            out.append(0x3A)
        }
        func string(_ name: String, _ value: String?) {
            guard let value else { return }
            key(name)
            JSONText.appendString(value, to: &out)
        }
        func int(_ name: String, _ value: Int64?) {
            guard let value else { return }
            key(name)
            JSONText.appendInt(value, to: &out)
        }
        int("seq", seq)
        string("prev", prev)
        string("kind", kind.rawValue)
        string("lineage", lineage)
        string("part", part)
        string("path", path)
        string("sha256", sha256)
        int("bytes", bytes)
        int("raw_bytes", rawBytes)
        int("records", records)
        string("first_pos", firstPos)
        string("last_pos", lastPos)
        string("from_token", fromToken)
        string("to_token", toToken)
        string("min_ts", minTs)
        string("max_ts", maxTs)
        if let replaces {
            key("replaces")
            for (index, seq) in replaces.enumerated() {
                out.append(index == 0 ? 0x5B : 0x2C)
                JSONText.appendInt(seq, to: &out)
            }
            if replaces.isEmpty { out.append(0x5B) }
            out.append(0x5D)
        }
        int("replaced_bytes", replacedBytes)
        int("replaced_records", replacedRecords)
        int("replaced_raw_bytes", replacedRawBytes)
        string("transform", transform)
        if let filtered {
            key("filtered")
            for (index, name) in filtered.keys.sorted().enumerated() {
                out.append(index == 0 ? 0x7B : 0x2C)
                JSONText.appendString(name, to: &out)
                out.append(0x3A)
                JSONText.appendInt(filtered[name]!, to: &out)
            }
            out.append(filtered.isEmpty ? 0x7B : 0x7D)
            if filtered.isEmpty { out.append(0x7D) }
        }
        int("rejected", rejected)
        string("created_at", createdAt)
        string("run", run)
        string("reason", reason)
        out.append(0x7D)
        return out
    }
}

/// The manifest as read from disk: its lines, the hash of the last one, and where each came from.
public struct Manifest: Sendable {
    public static let zeroHash = String(repeating: "0", count: 64)
    /// Lines per segment file.
    public static let segmentLines: Int64 = 10_000

    public init() {}

    /// Lines in order; appended only through `appended(_:)` so the path index stays true. A
    /// writing command reads only the tail (`ManifestStore.readTail`): then the lines start
    /// after `baseSeq`.
    public internal(set) var entries: [ManifestEntry] = []
    /// The seq of the line before `entries[0]`: 0 when the whole manifest was read.
    public internal(set) var baseSeq: Int64 = 0
    /// True when `entries` holds every line.
    public var isComplete: Bool { baseSeq == 0 }
    /// Blob path to the index of its last line, built on first use and kept up to date by
    /// `ManifestStore.append`: a commit must not scan the whole manifest.
    private var pathIndex: [String: Int]?

    /// The last blob line naming `path`, among the lines read.
    public mutating func blob(named path: String) -> ManifestEntry? {
        if pathIndex == nil {
            var index: [String: Int] = [:]
            for (position, entry) in entries.enumerated() where entry.namesBlob {
                if let path = entry.path { index[path] = position }
            }
            pathIndex = index
        }
        return pathIndex![path].map { entries[$0] }
    }

    mutating func appended(_ entry: ManifestEntry) {
        entries.append(entry)
        if entry.namesBlob, let path = entry.path { pathIndex?[path] = entries.count - 1 }
    }
    /// SHA-256 of the last line (the chain head).
    public var tailHash: String = Manifest.zeroHash
    public var tailSeq: Int64 { entries.last?.seq ?? baseSeq }

    public static func segmentName(forSeq seq: Int64) -> String {
        zeroPadded(UInt64((seq - 1) / segmentLines + 1), width: 8) + ".jsonl"
    }

    /// The seqs of blob lines a `compact` line among these replaced: their blobs are gone.
    public var replacedSeqs: Set<Int64> {
        Set(entries.lazy.filter { $0.kind == .compact }.flatMap { $0.replaces ?? [] })
    }

    /// The seqs of lines a `prune` line among these names: retention removed their blobs.
    public var prunedSeqs: Set<Int64> {
        Set(entries.lazy.filter { $0.kind == .prune }.flatMap { $0.replaces ?? [] })
    }

    /// The lines as the archive holds them now, in feed order: a `compact` line in the place of
    /// the first line it replaced, replaced blob lines left out, every other line kept. A compact
    /// line whose replaced lines are not among these (a tail read) stays in its place. Lines
    /// whose blobs retention removed (`prune`) are left out.
    public func currentLines() -> [ManifestEntry] {
        let pruned = prunedSeqs
        let entries = pruned.isEmpty ? self.entries : self.entries.filter { !pruned.contains($0.seq) }
        var replaced: Set<Int64> = []
        var compacts: [Int64: ManifestEntry] = [:]
        for entry in self.entries where entry.kind == .compact {
            replaced.formUnion(entry.replaces ?? [])  // a pruned compact line's replaced lines stay replaced
            compacts[entry.seq] = entry
        }
        guard !replaced.isEmpty else { return entries }
        // A compact line stands in the place of the first line it replaced, or, when that was a
        // compact line itself (a bucket compacted again, to convert it), of that one's place.
        func anchor(_ seq: Int64) -> Int64 {
            guard let compact = compacts[seq], let first = compact.replaces?.min() else { return seq }
            return anchor(first)
        }
        let present = Set(self.entries.map(\.seq))
        var placed: [Int64: ManifestEntry] = [:]
        var inPlace: Set<Int64> = []
        for entry in entries where entry.kind == .compact && !replaced.contains(entry.seq) {
            guard let first = entry.replaces?.min() else { continue }
            let place = anchor(first)
            if present.contains(place) {
                placed[place] = entry
                inPlace.insert(entry.seq)
            }
        }
        var lines: [ManifestEntry] = []
        for entry in entries {
            if let compact = placed[entry.seq] { lines.append(compact) }
            if entry.kind == .compact {
                if !replaced.contains(entry.seq) && !inPlace.contains(entry.seq) { lines.append(entry) }
            } else if !replaced.contains(entry.seq) {
                lines.append(entry)
            }
        }
        return lines
    }

    /// The live checkpoint state after the last live line (blob or epoch of lineage `live`).
    public var liveToken: String? {
        entries.last(where: {
            $0.lineage == "live"
                && ($0.kind == .blob || $0.kind == .epoch || $0.kind == .split || $0.kind == .merge
                    || $0.kind == .heartbeat)
        })?.toToken
    }
}

/// A problem found while reading the manifest: the segment file, the line, what is wrong.
public struct ManifestDamage: Sendable {
    public var file: String
    public var line: Int
    public var message: String
    /// True when only the last line is bad: an append that never completed, safe to cut off.
    public var isTornTail: Bool
    /// Byte offset in `file` where the bad line starts.
    public var offset: Int64
}

/// Reads and appends the segmented manifest under `_feedarchive/manifest/`.
public struct ManifestStore: Sendable {
    public let directory: String
    public let fs: any FileSystem
    public let fileMode: mode_t

    public init(directory: String, fs: any FileSystem, fileMode: mode_t) {
        self.directory = directory
        self.fs = fs
        self.fileMode = fileMode
    }

    /// Segment files in order.
    public func segments() throws -> [String] {
        (try fs.list(directory) ?? []).filter { $0.hasSuffix(".jsonl") && $0.count == 14 }.sorted()
    }

    /// Reads every line, checking JSON, sequence numbers and the hash chain. Stops at the first
    /// bad line and reports it; the lines before it are returned.
    public func read() throws -> (Manifest, ManifestDamage?) {
        try read(files: try segments()[...], from: 1)
    }

    /// Reads the lines from `seq` on, as a writing command needs them: what its checkpoint names
    /// and what was committed after it. The cost follows the segment that holds `seq` (at most
    /// `Manifest.segmentLines` lines, only the tail of it decoded), not the manifest's length;
    /// the lines before `seq` are verify's to check. Reads everything when `seq` is not in a
    /// segment (the manifest ends before it: the full read says where).
    public func readTail(from seq: Int64) throws -> (Manifest, ManifestDamage?) {
        let files = try segments()
        guard seq > 1, let start = files.firstIndex(of: Manifest.segmentName(forSeq: seq)) else {
            return try read(files: files[...], from: 1)
        }
        let (manifest, damage) = try read(files: files[start...], from: seq)
        if manifest.entries.first?.seq != seq { return try read(files: files[...], from: 1) }
        return (manifest, damage)
    }

    /// Reads `files` (a run of segments through the last), skipping the lines before `seq` in
    /// the first one. The first line read is trusted as the chain's start when `seq` > 1.
    private func read(files: ArraySlice<String>, from seq: Int64) throws -> (Manifest, ManifestDamage?) {
        var manifest = Manifest()
        manifest.baseSeq = seq - 1
        let decoder = JSONDecoder()
        for (fileIndex, name) in zip(files.indices, files) {
            let path = directory + "/" + name
            let bytes = try fs.read(path) ?? []
            var lineStart = 0
            var lineNumber = 0
            let isLastFile = fileIndex == files.endIndex - 1
            if fileIndex == files.startIndex && seq > 1 {
                // Skip to the line of `seq`: lines are numbered from the segment's first seq.
                let skip = Int((seq - 1) % Manifest.segmentLines)
                while lineNumber < skip, let newline = bytes[lineStart...].firstIndex(of: 0x0A) {
                    lineStart = newline + 1
                    lineNumber += 1
                }
                if lineNumber < skip { return (manifest, nil) }
            }
            while lineStart < bytes.count {
                lineNumber += 1
                let newline = bytes[lineStart...].firstIndex(of: 0x0A)
                let lineEnd = newline ?? bytes.count
                let line = Array(bytes[lineStart..<lineEnd])
                let isLastLine = isLastFile && (newline == nil || newline! + 1 == bytes.count)
                func damage(_ message: String) -> ManifestDamage {
                    ManifestDamage(
                        file: path, line: lineNumber, message: message, isTornTail: isLastLine, offset: Int64(lineStart)
                    )
                }
                if newline == nil {
                    return (manifest, damage("the line has no newline (an append that did not finish)"))
                }
                let entry: ManifestEntry
                do {
                    entry = try decoder.decode(ManifestEntry.self, from: Data(line))
                } catch {
                    return (manifest, damage("not a valid manifest line: \(error)"))
                }
                if entry.seq != manifest.tailSeq + 1 {
                    return (manifest, damage("seq \(entry.seq) follows seq \(manifest.tailSeq)"))
                }
                if manifest.entries.isEmpty && manifest.baseSeq > 0 {
                    manifest.tailHash = entry.prev  // the chain before `seq` is verify's to check
                }
                if entry.prev != manifest.tailHash {
                    return (
                        manifest,
                        damage(
                            "prev \(entry.prev.prefix(12))… does not match the hash of line seq \(manifest.tailSeq) (\(manifest.tailHash.prefix(12))…): the hash chain is broken"
                        )
                    )
                }
                if Manifest.segmentName(forSeq: entry.seq) != name {
                    return (
                        manifest,
                        damage("seq \(entry.seq) belongs in segment \(Manifest.segmentName(forSeq: entry.seq))")
                    )
                }
                manifest.appended(entry)
                manifest.tailHash = hexString(SHA256.hash(data: line))
                lineStart = lineEnd + 1
            }
        }
        return (manifest, nil)
    }

    /// Makes what `read()` saw durable before anyone acts on it: a line a killed run wrote but
    /// never fsynced is complete in the page cache and would otherwise be trusted, then lost
    /// with the machine. fsyncs the last segment and the manifest folder (its entry for a
    /// segment created by a run that died before syncing the folder).
    public func syncTail() throws {
        if let last = try segments().last {
            let file = try fs.openForAppend(directory + "/" + last, mode: fileMode)
            do {
                try file.sync()
                try file.close()
            } catch {
                try? file.close()
                throw error
            }
        }
        try fs.syncDirectory(directory)
    }

    /// Appends one line after `manifest`'s tail and fsyncs it: the commit point.
    @discardableResult
    public func append(_ entry: ManifestEntry, to manifest: inout Manifest) throws -> ManifestEntry {
        try append([entry], to: &manifest)[0]
    }

    /// Appends lines after `manifest`'s tail, chained in order, with one write and one fsync
    /// per segment they fall in (a group commit). A crash in between leaves a prefix of them
    /// and at worst a torn last line, which recovery takes back.
    @discardableResult
    public func append(_ entries: [ManifestEntry], to manifest: inout Manifest) throws -> [ManifestEntry] {
        var written: [ManifestEntry] = []
        var index = 0
        while index < entries.count {
            var seq = manifest.tailSeq
            var prev = manifest.tailHash
            var bytes: [UInt8] = []
            var lines: [(ManifestEntry, String)] = []
            let firstSeq = seq + 1
            let segment = Manifest.segmentName(forSeq: firstSeq)
            repeat {
                var entry = entries[index]
                seq += 1
                entry.seq = seq
                entry.prev = prev
                let line = entry.encodedLine()
                prev = hexString(SHA256.hash(data: line))
                bytes += line
                bytes.append(0x0A)
                lines.append((entry, prev))
                index += 1
            } while index < entries.count && Manifest.segmentName(forSeq: seq + 1) == segment
            let path = directory + "/" + segment
            let isNewSegment = (firstSeq - 1) % Manifest.segmentLines == 0
            let sizeBefore = try fs.size(path) ?? 0
            let file = try fs.openForAppend(path, mode: fileMode)
            do {
                try bytes.withUnsafeBytes { try file.write($0) }
                try file.sync()
                try file.close()
            } catch {
                // Lines whose write or fsync failed are in doubt: take them back so no later
                // reader mistakes them for commits. If even that fails, recovery treats them as
                // a torn tail.
                try? file.close()
                try? fs.truncate(path, to: sizeBefore)
                throw error
            }
            if isNewSegment { try fs.syncDirectory(directory) }
            for (entry, hash) in lines {
                manifest.appended(entry)
                manifest.tailHash = hash
                written.append(entry)
            }
        }
        return written
    }
}
