import Foundation

/// Reads a job's archived changes in feed order, one envelope per line: the live lineage's
/// blobs in manifest order, decoded. Reads only the archive; the source is not needed.
public struct ArchiveReader {
    /// Where reading starts (`--from`) or stops (`--until`).
    public enum Bound: Equatable, Sendable {
        /// A time in microseconds since the Unix epoch: filters each change on its `ts`.
        case time(Int64)
        /// A token at a blob boundary: the `to_token` of a manifest line.
        case token(String)

        /// An RFC 3339 time, or else a token.
        public init(_ text: String) {
            if let date = parseRFC3339(text) {
                self = .time(Int64(date.timeIntervalSince1970 * 1_000_000))
            } else {
                self = .token(text)
            }
        }
    }

    /// Output is handed over in chunks of whole lines of at least this many bytes (the last
    /// one excepted), so a long archive streams with bounded memory.
    static let chunkBytes = 1 << 20

    /// The archive as loaded; its manifest is intact but for a torn last line.
    public let archive: JobArchive

    /// Loads the job's archive; a manifest damaged before its last line is a data error (65).
    public init(job: JobConfig, fs: any FileSystem = PosixFileSystem()) throws {
        archive = JobArchive(job: job, fs: fs)
        if let damage = try archive.load(), !damage.isTornTail {
            throw FeedArchiveError.data(path: "\(damage.file):\(damage.line)", message: damage.message)
        }
    }

    /// Hands `output` the dead letters (`_feedarchive/rejected/`), one JSON object a line
    /// (`{pos, part, reason, envelope}`), in manifest order, each change once (a run killed
    /// after writing a batch's dead letters writes them again when it reads the batch again).
    public func readRejected(to output: ([UInt8]) throws -> Void) throws {
        var seen = Set<String>()
        for entry in archive.manifest.entries where entry.kind == .rejected {
            guard let path = entry.path else { continue }
            let absolute = archive.layout.absolute(path)
            guard let bytes = try archive.fs.read(absolute) else {
                throw FeedArchiveError.data(
                    path: absolute, message: "the dead letters named by manifest seq \(entry.seq) are missing")
            }
            let decoded: [UInt8]
            do {
                decoded = try Compression.zstd.makeDecoder().decodeAll(bytes)
            } catch {
                throw FeedArchiveError.data(path: absolute, message: "cannot decode: \(error)")
            }
            var chunk: [UInt8] = []
            for line in decoded.split(separator: 0x0A, omittingEmptySubsequences: true) {
                let where_ =
                    (JSONScan.field("part", in: line).flatMap { JSONScan.string($0) } ?? "") + "\u{1}"
                    + (JSONScan.field("pos", in: line).flatMap { JSONScan.string($0) } ?? "")
                guard seen.insert(where_).inserted else { continue }
                chunk += line
                chunk.append(0x0A)
            }
            if !chunk.isEmpty { try output(chunk) }
        }
    }

    /// Hands `output` the changes after `from` and before `until`, in feed order. A token bound
    /// selects whole blobs (after the blob that ends at `from`, through the blob that ends at
    /// `until`); a time bound keeps the changes whose `ts` is at or after `from` and before
    /// `until` (changes without one are kept). A missing or undecodable blob is a data error
    /// (65); a token at no blob boundary of this archive is a usage error (64).
    public func read(from: Bound?, until: Bound?, to output: ([UInt8]) throws -> Void) throws {
        let entries = archive.manifest.currentLines()
        func boundary(_ text: String, _ flag: String) throws -> Int {
            guard let index = entries.firstIndex(where: { $0.toToken == text }) else {
                let pruned = archive.manifest.prunedSeqs
                if let line = archive.manifest.entries.first(where: { $0.toToken == text }), pruned.contains(line.seq) {
                    // Retention removed that blob, and only ever the oldest: every change kept is
                    // after it. As an end, nothing kept is before it.
                    return -1
                }
                if archive.manifest.entries.contains(where: { $0.toToken == text }) {
                    throw FeedArchiveError.usage(
                        "\(flag) \(text.prefix(40))…: this blob boundary is inside a blob that `feedarchive compact` made of several; give a time, or the token at the compacted blob's end"
                    )
                }
                throw FeedArchiveError.usage(
                    "\(flag) \(text.prefix(40))…: not a time, and not a token at a blob boundary of this archive")
            }
            return index
        }
        var startIndex = 0
        var endIndex = entries.count
        var fromTime: Int64?
        var untilTime: Int64?
        switch from {
        case .time(let micros): fromTime = micros
        case .token(let text): startIndex = try boundary(text, "--from") + 1
        case nil: break
        }
        switch until {
        case .time(let micros): untilTime = micros
        case .token(let text): endIndex = try boundary(text, "--until") + 1
        case nil: break
        }
        var buffer: [UInt8] = []
        var taken: Set<Int64> = []  // lines whose changes a later compacted blob gave already
        for entry in entries[min(startIndex, endIndex)..<endIndex] where entry.namesBlob && entry.lineage == "live" {
            guard let path = entry.path, let compression = Compression.of(path: path), !taken.contains(entry.seq)
            else { continue }
            let absolute = archive.layout.absolute(path)
            var decoded: [UInt8]
            if let bytes = try archive.fs.read(absolute) {
                do {
                    decoded = try compression.makeDecoder().decodeAll(bytes)
                } catch {
                    throw FeedArchiveError.data(path: absolute, message: "cannot decode: \(error)")
                }
            } else {
                // A compaction or prune that committed while cat read deleted it: the compacted
                // blob holds the same changes (from this one's first on); pruned ones are gone.
                let since = ((try? archive.store.readTail(from: archive.manifest.tailSeq))?.0.entries ?? []).filter {
                    $0.seq > archive.manifest.tailSeq && ($0.kind == .compact || $0.kind == .prune)
                }
                // Follow the line to what stands for it now: a compacted blob (compacted again,
                // to convert it), or nothing when a prune removed it on the way.
                var standing: ManifestEntry?
                var seq = entry.seq
                var removed = false
                while let next = since.first(where: { ($0.replaces ?? []).contains(seq) }) {
                    if next.kind == .prune {
                        removed = true
                        break
                    }
                    standing = next
                    seq = next.seq
                }
                if removed { continue }
                guard let compact = standing, let newPath = compact.path,
                    let first = entry.firstPos, let newCompression = Compression.of(path: newPath),
                    let bytes = try archive.fs.read(archive.layout.absolute(newPath)),
                    let whole = try? newCompression.makeDecoder().decodeAll(bytes)
                else {
                    throw FeedArchiveError.data(
                        path: absolute, message: "the blob named by manifest seq \(entry.seq) is missing")
                }
                // Every line it stands for, through the compacted blobs it replaced in turn.
                let compacts = Dictionary(
                    (archive.manifest.entries + since).filter { $0.kind == .compact }.map { ($0.seq, $0) },
                    uniquingKeysWith: { $1 })
                var pending = compact.replaces ?? []
                while let next = pending.popLast() {
                    if taken.insert(next).inserted { pending += compacts[next]?.replaces ?? [] }
                }
                decoded = []
                let firstBytes = Array(first.utf8)
                for line in whole.split(separator: 0x0A)
                where !(Self.position(in: line) ?? []).lexicographicallyPrecedes(firstBytes) {
                    decoded.append(contentsOf: line)
                    decoded.append(0x0A)
                }
            }
            if fromTime == nil && untilTime == nil {
                buffer.append(contentsOf: decoded)
            } else {
                for line in decoded.split(separator: 0x0A) {
                    let ts = Self.timestamp(in: line)
                    if let fromTime, let ts, ts < fromTime { continue }
                    if let untilTime, let ts, ts >= untilTime { continue }
                    buffer.append(contentsOf: line)
                    buffer.append(0x0A)
                }
            }
            if buffer.count > Self.chunkBytes {
                try output(buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        if !buffer.isEmpty { try output(buffer) }
    }

    /// The envelope's `ts`, found without decoding the whole line.
    /// The envelope's `pos` (its first key).
    static func position(in line: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let key = Array(#"{"pos":""#.utf8)
        guard line.starts(with: key) else { return nil }
        let start = line.startIndex + key.count
        guard let end = line[start...].firstIndex(of: 0x22) else { return nil }
        return line[start..<end]
    }

    static func timestamp(in line: ArraySlice<UInt8>) -> Int64? {
        let key = Array(#","ts":""#.utf8)
        guard let start = line.firstRange(of: key)?.upperBound, let end = line[start...].firstIndex(of: 0x22) else {
            return nil
        }
        return Array(line[start..<end]).withUnsafeBufferPointer { parseTimestampMicros($0) }
    }
}
