import Foundation

// The commit protocol, in the order of its steps (docs/DESIGN.md, "Commit protocol"). Every
// command that writes goes through these functions and no others: `run` and `backfill` for
// blobs and topology lines, `epoch`, `ack-gap` and heartbeats for lines without a blob, and
// recovery (`Recovery.swift`) for the checkpoint it rolls forward.
//
//   1. lock             openForWriting
//   2. recover          recover (Recovery.swift)
//   3. check the source ArchiveRunner: identity, token, continuity
//   4. read             RunLoop (Run/RunLoop.swift) cuts pages into batches
//   5. blob temp file   beginBlob, then BlobWriter.append for each record
//   6. fsync, rename    commit(blob:): finish (fsync), placeBlob (rename, fsync folders)
//   7. manifest line    appendManifestLine: the commit point
//   8. checkpoint       writeCheckpoint
//   9. acknowledge      acknowledge, only once the checkpoint is durable
//
// A failure before step 7 leaves the feed where it was: the next run reads it again.

extension JobArchive {
    // MARK: 1. The lock

    /// Creates the job's folders (fsyncing each new one into its parent) and takes the lock.
    public func openForWriting() throws -> JobLock {
        try checkNotInsideAnotherArchive()
        if fs.entryKind(layout.dataDirectory + "/_feedarchive") != nil {
            throw FeedArchiveError.badJobFile(
                place: layout.dataDirectory,
                message:
                    "another job's archive lies in the data folder of job \(jobName) (a job named data with archive.root \(layout.jobRoot)): their files would mix. Nothing was changed; give that job an archive.root outside \(layout.jobRoot)"
            )
        }
        try createDirectories(layout.metaDirectory)
        try createDirectories(layout.manifestDirectory)
        try createDirectories(layout.dataDirectory)
        try createDirectories(layout.tempDirectory)
        let lock = try JobLock(path: layout.lockFile, mode: settings.fileMode)
        // Folders an earlier, killed run created may not be in their parents on disk yet.
        try fs.syncDirectory(parentDirectory(of: layout.jobRoot))
        try makeDirectoryChainDurable(layout.manifestDirectory)
        try makeDirectoryChainDurable(layout.dataDirectory)
        return lock
    }

    // MARK: 5. The blob's temp file, in its final folder

    /// Creates the folder of a blob (durably) and its temp file `_feedarchive/tmp/<part>_<firstPos>.tmp`
    /// (the final name holds the last position, known only when the batch ends; recovery lists
    /// that one folder for the temp files of a killed run).
    func beginBlob(
        relativeDirectory: String, partition: String, first: Position, compression: Compression, level: Int,
        workers: Int
    ) throws -> BlobWriter {
        try createDirectories(layout.absolute(relativeDirectory), durableAtCommit: true)
        let temp = layout.tempDirectory + "/" + sanitizePathComponent(partition) + "_" + first.rawValue + ".tmp"
        return try BlobWriter(
            fs: fs, tempPath: temp, compression: compression, level: level, workers: workers, mode: settings.fileMode,
            options: settings.formatOptions)
    }

    // MARK: 6–8. A finished blob: durable, then named in the manifest, then the checkpoint

    /// Commits a blob whose records are all written: ends the frame and fsyncs the temp file,
    /// renames it into place and fsyncs the folders, appends its manifest line (the commit
    /// point), then replaces the checkpoint with `newToken` when given.
    public func commit(blob writer: BlobWriter, relativePath: String, entry: ManifestEntry, newToken: String?) throws
        -> BlobWriter.Result
    {
        let result = try writer.finish()  // 6. the frame ends; the temp file is fsynced and closed
        return try commit(
            finished: result, writer: writer, relativePath: relativePath, entry: entry, newToken: newToken)
    }

    /// `commit(blob:)` for a blob whose frame has ended and whose temp file is fsynced.
    func commit(
        finished result: BlobWriter.Result, writer: BlobWriter, relativePath: String, entry: ManifestEntry,
        newToken: String?
    ) throws -> BlobWriter.Result {
        let placed = try placeBlob(writer, result: result, relativePath: relativePath)  // 6. rename, fsync folders
        var entry = entry
        entry.path = placed
        entry.sha256 = result.sha256
        entry.bytes = result.bytes
        entry.rawBytes = result.rawBytes
        try appendManifestLine(entry)  // 7. the commit point
        if let newToken { try writeCheckpoint(token: newToken, deferrable: true) }  // 8.
        return result
    }

    /// Step 6: renames the fsynced temp file to its final name and fsyncs its folder and every
    /// folder above it this command has not made durable yet.
    ///
    /// A backfill (or a new epoch) re-reading a range a blob already holds: the same bytes are
    /// not written again (the line still records the progress), or put back when the file was
    /// lost. Other bytes under the same name (rows that arrived late, a table re-created, other
    /// compression settings) never replace the blob: the new one is kept beside it, named
    /// `<name>-<first 8 hex digits of its SHA-256>`, and verify counts the overlap as duplicates.
    /// Returns the relative path the blob was placed at.
    func placeBlob(_ writer: BlobWriter, result: BlobWriter.Result, relativePath: String) throws -> String {
        var relativePath = relativePath
        if let existing = try takenBlob(relativePath), existing.sha256 != result.sha256 {
            let name = relativePath.lastIndex(of: "/").map { relativePath.index(after: $0) } ?? relativePath.startIndex
            let dot = relativePath[name...].firstIndex(of: ".") ?? relativePath.endIndex
            relativePath = relativePath[..<dot] + "-" + result.sha256.prefix(8) + relativePath[dot...]
        }
        let final = layout.absolute(relativePath)
        if let existing = try takenBlob(relativePath) {
            guard existing.sha256 == result.sha256 else {
                try fs.remove(writer.tempPath)
                throw FeedArchiveError.data(
                    path: final,
                    message:
                        "a blob with this name already exists with SHA-256 \((existing.sha256 ?? "").prefix(16))…, the re-read batch hashes to \(result.sha256.prefix(16))…",
                    hint: "nothing was written; run the command again"
                )
            }
            if try fs.size(final) == result.bytes && fileHash(final) == result.sha256 {
                try fs.remove(writer.tempPath)
            } else {
                try fs.rename(writer.tempPath, to: final)  // the lost or damaged blob, restored
                try fs.syncDirectory(parentDirectory(of: final))
            }
        } else {
            try notePlacing(relativePath)
            try fs.rename(writer.tempPath, to: final)
            try fs.syncDirectory(parentDirectory(of: final))
        }
        try makeDirectoryChainDurable(parentDirectory(of: final))
        return relativePath
    }

    /// The committed line naming `path` when the name is taken. The whole manifest is read
    /// only when a file is there that the lines read do not name (a re-read of a range an
    /// older blob holds): a name not taken costs one `lstat`.
    func takenBlob(_ path: String) throws -> ManifestEntry? {
        if let entry = manifest.blob(named: path) { return entry }
        guard fs.entryKind(layout.absolute(path)) != nil else { return nil }
        return try committedBlob(named: path)
    }

    /// The last line naming `path` in the whole manifest (read now if only its tail was).
    func committedBlob(named path: String) throws -> ManifestEntry? {
        if let entry = manifest.blob(named: path) { return entry }
        guard !manifest.isComplete else { return nil }
        let (whole, damage) = try store.read()
        guard whole.tailSeq == manifest.tailSeq, whole.tailHash == manifest.tailHash else {
            throw FeedArchiveError.data(
                path: damage?.file ?? layout.manifestDirectory,
                message:
                    "the manifest is damaged before the lines this command read\(damage.map { " (line \($0.line): \($0.message))" } ?? "")",
                hint: "run `feedarchive verify \(jobName)` for the full picture and restore the manifest from a copy")
        }
        manifest = whole
        return manifest.blob(named: path)
    }

    /// Records the blobs about to be renamed into place and the lines that will name them
    /// (`SEQ PATH`, one per line), for the recovery of a run killed between the two. Not
    /// fsynced: a killed process leaves it in the page cache; after a crash of the machine,
    /// `verify` finds such a blob.
    func notePlacing(_ relativePaths: [String]) throws {
        var text = ""
        for (offset, path) in relativePaths.enumerated() { text += "\(manifest.tailSeq + 1 + Int64(offset)) \(path)\n" }
        let file = try fs.create(layout.placingFile, mode: settings.fileMode)
        do {
            try Array(text.utf8).withUnsafeBytes { try file.write($0) }
            try file.close()
        } catch {
            try? file.close()
            throw error
        }
    }

    func notePlacing(_ relativePath: String) throws { try notePlacing([relativePath]) }

    // MARK: 6–8 for a group of blobs

    /// A blob whose frame has ended (`BlobWriter.end`), waiting for its commit.
    struct EndedBlob {
        let result: BlobWriter.Result
        let writer: BlobWriter
        let relativePath: String
        let entry: ManifestEntry
        let newToken: String?
    }

    /// Commits blobs in order as one group: the steps of `commit(blob:)` for each, in the same
    /// order (every blob durable, then renamed, its folders durable, then its line), but one
    /// journal commit for all their fsyncs (their writeback started when their frames ended),
    /// one fsync per folder and one manifest write. A blob whose name is taken on disk is
    /// committed on its own, between the groups before and after it.
    ///
    /// Returns each blob's outcome, in order: a failure fails that blob and every one after it
    /// (those before it are committed).
    func commit(group: [EndedBlob]) -> [Result<BlobWriter.Result, any Error>] {
        var outcomes: [Result<BlobWriter.Result, any Error>] = []
        var pending: [EndedBlob] = []
        var names: Set<String> = []
        func place() throws {
            guard !pending.isEmpty else { return }
            try notePlacing(pending.map(\.relativePath))
            var folders: [String] = []
            for blob in pending {
                let final = layout.absolute(blob.relativePath)
                try fs.rename(blob.writer.tempPath, to: final)  // 6. rename
                if folders.last != parentDirectory(of: final) { folders.append(parentDirectory(of: final)) }
            }
            // 6. fsync the folders renamed into, then the parents of folders this command created
            // (each once for the whole group: the first fsync commits the journal for all).
            var synced: Set<String> = []
            for folder in folders where synced.insert(folder).inserted { try fs.syncDirectory(folder) }
            var created: [String] = []
            for folder in folders {
                var current = folder
                while current.count > layout.jobRoot.count, !self.folders.isDurable(current) {
                    created.append(current)
                    current = parentDirectory(of: current)
                }
            }
            for folder in created {
                let parent = parentDirectory(of: folder)
                if synced.insert(parent).inserted { try fs.syncDirectory(parent) }
            }
            for folder in created { self.folders.noteDurable(folder) }
            let entries = pending.map { blob in
                var entry = blob.entry
                entry.path = blob.relativePath
                entry.sha256 = blob.result.sha256
                entry.bytes = blob.result.bytes
                entry.rawBytes = blob.result.rawBytes
                return entry
            }
            try store.append(entries, to: &manifest)  // 7. the commit point
            if let token = pending.last?.newToken { try writeCheckpoint(token: token, deferrable: true) }  // 8.
            outcomes += pending.map { .success($0.result) }
            pending = []
            names = []
        }
        do {
            for blob in group { try blob.writer.syncAndClose() }  // 6. fsync
            for blob in group {
                // A group's lines stay in one segment, so its append succeeds or fails whole.
                if Manifest.segmentName(forSeq: manifest.tailSeq + 1 + Int64(pending.count))
                    != Manifest.segmentName(forSeq: manifest.tailSeq + 1)
                {
                    try place()
                }
                if names.contains(blob.relativePath) || manifest.blob(named: blob.relativePath) != nil
                    || fs.entryKind(layout.absolute(blob.relativePath)) != nil
                {
                    try place()
                    _ = try commit(
                        finished: blob.result, writer: blob.writer, relativePath: blob.relativePath, entry: blob.entry,
                        newToken: blob.newToken)
                    outcomes.append(.success(blob.result))
                } else {
                    pending.append(blob)
                    names.insert(blob.relativePath)
                }
            }
            try place()
        } catch {
            while outcomes.count < group.count { outcomes.append(.failure(error)) }
        }
        return outcomes
    }

    // MARK: 7–8. Lines without a blob

    /// Commits a line that names no blob (split, merge, heartbeat, a backfill's epoch, gap-ack)
    /// and moves the checkpoint when given a token.
    public func commitLine(_ entry: ManifestEntry, newToken: String?) throws {
        try appendManifestLine(entry)
        if let newToken { try writeCheckpoint(token: newToken) }
    }

    /// The checkpoint after a line of `lineage` that reaches `token`: the live lineage moves it
    /// there; any other lineage (a backfill, a gap-ack) keeps the live token, tied to the new
    /// last line.
    func checkpointToken(after lineage: String, reaching token: String) -> String {
        lineage == "live" ? token : (checkpoint?.token ?? token)
    }

    /// Starts the live lineage: an `epoch` line whose `to_token` is where reading begins, then
    /// the checkpoint there.
    public func startEpoch(token: ContinuationToken, reason: String) throws {
        try commitLine(
            ManifestEntry(kind: .epoch, lineage: "live", toToken: token.encoded, run: runID, reason: reason),
            newToken: token.encoded)
    }

    /// `ack-gap`: a person signs off a known loss between two tokens; verify then reports that
    /// gap as acknowledged instead of as an error. The live checkpoint stays where it is.
    public func acknowledgeGap(from: ContinuationToken, until: ContinuationToken, reason: String) throws {
        guard let checkpoint else { throw FeedArchiveError.usage("the job has no archive yet") }
        try commitLine(
            ManifestEntry(
                kind: .gapAck, lineage: "gap-ack", part: from.cursors.keys.sorted().joined(separator: ","),
                fromToken: from.encoded, toToken: until.encoded, run: runID, reason: reason),
            newToken: checkpoint.token)
    }

    /// Rewrites the checkpoint with the same live token, tied to the manifest's new tail (after
    /// a line of another lineage, so the checkpoint keeps naming the last line).
    public func touchCheckpoint() throws {
        guard let token = checkpoint?.token ?? manifest.liveToken else { return }
        try writeCheckpoint(token: token)
    }

    // MARK: 7. The manifest line: the commit point

    /// Appends `entry` with the next seq and the previous line's hash, and fsyncs the segment.
    func appendManifestLine(_ entry: ManifestEntry) throws {
        try store.append(entry, to: &manifest)
    }

    // MARK: 8. The checkpoint

    /// Replaces checkpoint.json (temp file, fsync, rename, fsync folder) with `token`, tied to
    /// the manifest's last line.
    ///
    /// `deferrable` (a blob's commit): written at most once every `checkpointInterval`; the
    /// rest wait in `pendingCheckpoint` for the next write or `flushCheckpoint` at the end of
    /// the run. The manifest is the truth and recovery rolls a checkpoint behind it forward, so
    /// a deferred write loses nothing; it saves two fsyncs and an inode per blob.
    func writeCheckpoint(token: String, deferrable: Bool = false) throws {
        let now = ProcessInfo.processInfo.systemUptime
        if deferrable, let last = checkpointWrittenAt, now - last < Self.checkpointInterval {
            pendingCheckpoint = (token, manifest.tailSeq)
            return
        }
        pendingCheckpoint = nil
        checkpointWrittenAt = now
        let next = Checkpoint(
            token: token, manifestSeq: manifest.tailSeq, manifestHash: manifest.tailHash, totals: try totalsAtTail())
        try next.write(to: layout.checkpointFile, fs: fs, mode: settings.fileMode)
        checkpoint = next
    }

    /// The blob lines summed up to the manifest's tail: the checkpoint's totals plus the lines
    /// read after it, or the whole manifest once, for a checkpoint written without them.
    public func totalsAtTail() throws -> ArchiveTotals {
        if let checkpoint, let totals = checkpoint.totals, checkpoint.manifestSeq >= manifest.baseSeq,
            checkpoint.manifestSeq <= manifest.tailSeq
        {
            var sum = totals
            for entry in manifest.entries.reversed() {
                guard entry.seq > checkpoint.manifestSeq else { break }
                sum.add(entry)
            }
            return sum
        }
        return ArchiveTotals(manifest.isComplete ? manifest : try store.read().0)
    }

    /// Writes the checkpoint a blob's commit deferred: at the end of a run, or when it stops.
    public func flushCheckpoint() throws {
        // Only for the line it follows: after a failed append that left lines behind it (a
        // group across two segments), the token would not match the tail; recovery rolls the
        // checkpoint forward from the manifest instead.
        if let pending = pendingCheckpoint, pending.seq == manifest.tailSeq {
            try writeCheckpoint(token: pending.token)
        }
    }

    // MARK: 9. Acknowledge

    /// Tells the source that everything up to `token` is durable (PostgreSQL confirms its slot).
    /// Called only after the checkpoint holding `token` was written; a run repeats it at its
    /// start, so an acknowledgement lost to a crash is made by the next run.
    func acknowledge(_ token: ContinuationToken, to source: any FeedSource) async throws {
        try await source.acknowledge(token)
    }

    // MARK: Folders

    /// Creates a directory and makes each directory it created durable in its parent; with
    /// `durableAtCommit`, leaves that to the commit of the blob put in it (one fsync per parent
    /// for a whole group of blobs, in `makeDirectoryChainDurable`).
    public func createDirectories(_ path: String, durableAtCommit: Bool = false) throws {
        guard !folders.exists(path) else { return }
        try refuseLinks(on: path)
        for created in try fs.createDirectories(path, mode: settings.directoryMode) where !durableAtCommit {
            try fs.syncDirectory(parentDirectory(of: created))
            folders.noteDurable(created)
        }
        folders.noteExists(path)
    }

    /// Refuses (65) a folder of the archive reached through a symbolic link: what the job
    /// writes stays inside its archive. One `lstat` per level, once per folder per command.
    func refuseLinks(on path: String) throws {
        guard path.hasPrefix(layout.jobRoot + "/") else { return }
        var current = layout.jobRoot
        for component in path.dropFirst(layout.jobRoot.count + 1).split(separator: "/") {
            current += "/" + component
            switch fs.entryKind(current) {
            case .symbolicLink:
                throw FeedArchiveError.data(
                    path: current,
                    message:
                        "a symbolic link inside the archive: feedarchive never follows links inside a job's archive (it would write, and verify read, files outside it)",
                    hint: "nothing was changed; move the link out of \(layout.jobRoot)")
            case nil: return
            default: continue
            }
        }
    }

    /// fsyncs the parent of every folder from `directory` up to the job root, once per folder
    /// per command: a folder a killed run created (and never synced into its parent) becomes
    /// durable before a manifest line names a blob inside it.
    func makeDirectoryChainDurable(_ directory: String) throws {
        var current = directory
        while current.count > layout.jobRoot.count, !folders.isDurable(current) {
            try fs.syncDirectory(parentDirectory(of: current))
            folders.noteDurable(current)
            current = parentDirectory(of: current)
        }
    }
}
