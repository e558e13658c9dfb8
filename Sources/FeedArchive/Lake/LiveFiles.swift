import Foundation

/// `_feedarchive/files.txt`: the blob files the manifest holds live, for readers that must read
/// exactly the committed set (a glob of `data/**` can for a moment see a blob before its line,
/// or a compaction's new blob beside the ones it replaces). Tab-separated with a header line
/// `seq	path`: the manifest line and the file (relative to the job root) of each live blob, in
/// manifest order. Replaced atomically at the end of every command that changes the set.
///
/// `_feedarchive/files.json` (`{"manifest_seq": N}`) says through which manifest line the list
/// is; it is written after the list. Applying a line to the list is idempotent (a blob line
/// adds its file unless listed, a `compact` or `prune` line removes the seqs it names), so a
/// command stopped between the two files leaves a list the next one brings up to date by
/// applying the same lines again. Only the lines after N are read: the cost is the list's size,
/// not the manifest's.
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
        var rows: [(seq: Int64, path: String)] = []
        var from: Int64 = 1
        if let state, state.manifestSeq <= tail, let bytes = try fs.read(listFile) {
            if state.manifestSeq == tail { return }
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n").dropFirst() {
                guard let tab = line.firstIndex(of: "\t"), let seq = Int64(line[..<tab]) else { continue }
                rows.append((seq, String(line[line.index(after: tab)...])))
            }
            from = state.manifestSeq + 1
        }
        guard tail >= from else { return }
        let (lines, _) = from == 1 ? try archive.store.read() : try archive.store.readTail(from: from)
        var listed = Set(rows.map(\.path))
        for entry in lines.entries where entry.seq >= from && entry.seq <= tail {
            if entry.kind == .compact || entry.kind == .prune, let seqs = entry.replaces, !seqs.isEmpty {
                let gone = Set(seqs)
                for row in rows where gone.contains(row.seq) { listed.remove(row.path) }
                rows.removeAll { gone.contains($0.seq) }
            }
            // A file another line names already is listed once (a backfill that wrote the
            // same blob again).
            if entry.namesBlob, let path = entry.path, listed.insert(path).inserted {
                rows.append((entry.seq, path))
            }
        }
        var text = "seq\tpath\n"
        text.reserveCapacity(rows.count * 80)
        for row in rows { text += "\(row.seq)\t\(row.path)\n" }
        try fs.replaceAtomically(listFile, with: Array(text.utf8), mode: archive.settings.fileMode)
        try fs.replaceAtomically(stateFile, json: State(manifestSeq: tail), mode: archive.settings.fileMode)
    }
}
