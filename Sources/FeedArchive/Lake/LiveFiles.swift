import Foundation

/// `_feedarchive/files.txt`: the blob files the manifest holds live, for readers that must read
/// exactly the committed set (a glob of `data/**` can for a moment see a blob before its line,
/// or a compaction's new blob beside the ones it replaces). Tab-separated with a header line
/// `seq	path`: each live blob line (not replaced, not pruned) and its file, relative to the job
/// root (a file two lines name, a backfill that wrote a lost blob again, is listed twice: read
/// the distinct paths). Replaced atomically when lines go (compact, prune); appended to (and
/// fsynced) when a run or backfill only adds.
///
/// `_feedarchive/files.json` (`{"manifest_seq": N}`) says through which manifest line the list
/// is; it is written after the list. Applying a line to the list is idempotent (a blob line
/// adds its row unless its seq is listed, a `compact` or `prune` line removes the seqs it
/// names; an append skips the seqs up to the list's last row), so a command stopped between
/// the two files leaves a list the next one brings up to date by applying the same lines
/// again. Only the lines after N are read, and an append reads only the list's end: a run's
/// cost is its own lines, not the archive's.
struct LiveFiles {
    let archive: JobArchive

    struct State: Codable {
        var manifestSeq: Int64

        enum CodingKeys: String, CodingKey {
            case manifestSeq = "manifest_seq"
        }
    }

    var fs: any FileSystem { archive.fs }
    var listFile: String { archive.layout.metaDirectory + "/files.txt" }
    var stateFile: String { archive.layout.metaDirectory + "/files.json" }

    /// Brings the list up to the manifest's tail (the caller holds the job lock). Returns a
    /// warning instead of failing: the list is derived, the archive is whole without it.
    @discardableResult
    func refresh() -> String? {
        do {
            try update()
            return nil
        } catch {
            return "the live file list \(listFile) was not brought up to date (\(error)); the next command retries"
        }
    }

    func update() throws {
        let tail = archive.manifest.tailSeq
        let state = (try? fs.read(stateFile)).flatMap { $0 }.flatMap {
            try? JSONDecoder().decode(State.self, from: Data($0))
        }
        guard let state, state.manifestSeq <= tail, fs.entryKind(listFile) == .file else {
            // No list yet (or one of another manifest): built from the whole manifest.
            let (manifest, _) = try archive.store.read()
            try rewrite(apply(manifest.entries.filter { $0.seq <= tail }, to: []), through: tail)
            return
        }
        if state.manifestSeq == tail { return }
        let (read, _) = try archive.store.readTail(from: state.manifestSeq + 1)
        let lines = read.entries.filter { $0.seq > state.manifestSeq && $0.seq <= tail }
        if lines.contains(where: { $0.kind == .compact || $0.kind == .prune }) {
            // Lines go: the list is rewritten.
            var rows: [(seq: Int64, path: String)] = []
            for line in String(decoding: try fs.read(listFile) ?? [], as: UTF8.self).split(separator: "\n").dropFirst()
            {
                guard let tab = line.firstIndex(of: "\t"), let seq = Int64(line[..<tab]) else { continue }
                rows.append((seq, String(line[line.index(after: tab)...])))
            }
            try rewrite(apply(lines, to: rows), through: tail)
            return
        }
        // Only new blobs (a run): appended, after the rows a stopped command appended already.
        let (lastSeq, whole, size) = try lastRow()
        if whole < size { try fs.truncate(listFile, to: Int64(whole)) }  // a torn append
        var text = ""
        for line in lines where line.namesBlob && line.seq > lastSeq {
            if let path = line.path { text += "\(line.seq)\t\(path)\n" }
        }
        if !text.isEmpty {
            let file = try fs.openForAppend(listFile, mode: archive.settings.fileMode)
            do {
                try Array(text.utf8).withUnsafeBytes { try file.write($0) }
                try file.sync()  // before the state says the list holds them
                try file.close()
            } catch {
                try? file.close()
                throw error
            }
        }
        try fs.replaceAtomically(stateFile, json: State(manifestSeq: tail), mode: archive.settings.fileMode)
    }

    /// Applies manifest lines to the rows: a blob or compact line adds its row (unless its
    /// seq is listed), a compact or prune line removes the rows of the seqs it names.
    private func apply(_ lines: [ManifestEntry], to rows: [(seq: Int64, path: String)]) -> [(seq: Int64, path: String)]
    {
        var rows = rows
        var listed = Set(rows.map(\.seq))
        for entry in lines {
            if entry.kind == .compact || entry.kind == .prune, let seqs = entry.replaces, !seqs.isEmpty {
                let gone = Set(seqs)
                rows.removeAll { gone.contains($0.seq) }
                listed.subtract(gone)
            }
            if entry.namesBlob, let path = entry.path, listed.insert(entry.seq).inserted {
                rows.append((entry.seq, path))
            }
        }
        return rows
    }

    private func rewrite(_ rows: [(seq: Int64, path: String)], through tail: Int64) throws {
        var text = "seq\tpath\n"
        text.reserveCapacity(rows.count * 80)
        for row in rows { text += "\(row.seq)\t\(row.path)\n" }
        try fs.replaceAtomically(listFile, with: Array(text.utf8), mode: archive.settings.fileMode)
        try fs.replaceAtomically(stateFile, json: State(manifestSeq: tail), mode: archive.settings.fileMode)
    }

    /// The seq of the list's last whole row (0 for none), the length up to its newline, and
    /// the file's size: only the file's end is read.
    private func lastRow() throws -> (Int64, Int, Int) {
        let fd = open(listFile, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FeedArchiveError.io(operation: "open", path: listFile, errno: errno) }
        defer { close(fd) }
        let size = Int(lseek(fd, 0, SEEK_END))
        let start = max(0, size - 8192)
        var buffer = [UInt8](repeating: 0, count: size - start)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
        guard count == buffer.count else { throw FeedArchiveError.io(operation: "read", path: listFile, errno: errno) }
        guard let end = buffer.lastIndex(of: 0x0A) else { return (0, 0, size) }
        let lineStart = buffer[..<end].lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
        let line = buffer[lineStart..<end]
        let seq = line.firstIndex(of: 0x09).flatMap { Int64(String(decoding: line[..<$0], as: UTF8.self)) } ?? 0
        return (seq, start + end + 1, size)
    }
}
