import Foundation

/// What recovery found and did at the start of a writing command.
public struct RecoveryReport: Sendable {
    /// A manifest line cut off because its append never completed.
    public var cutTornLine: String?
    /// The checkpoint was behind the manifest and was rolled forward from `from` to `to`.
    public var rolledForward: (from: Int64, to: Int64)?
    /// Files moved to quarantine (relative to the job root).
    public var quarantined: [String] = []

    public var isEmpty: Bool { cutTornLine == nil && rolledForward == nil && quarantined.isEmpty }

    /// One line per action, for the log.
    public var messages: [String] {
        var lines: [String] = []
        if let cutTornLine { lines.append("recovery: cut off a torn manifest line (\(cutTornLine))") }
        if let (from, to) = rolledForward { lines.append("recovery: rolled the checkpoint forward from manifest seq \(from) to \(to)") }
        for path in quarantined { lines.append("recovery: moved \(path) to quarantine (no manifest line names it)") }
        return lines
    }
}

/// The on-disk archive of one job (`<lake>/<job>`) and the commit protocol over it:
/// blob durable, then manifest line, then checkpoint. One instance per command, under the lock.
public final class JobArchive {
    public let layout: ArchiveLayout
    public let fs: any FileSystem
    public let settings: ArchiveSettings
    public let jobName: String
    public let store: ManifestStore
    /// Identifies this command's writes in manifest lines and quarantine folders.
    public let runID: String
    public private(set) var manifest = Manifest()
    public private(set) var checkpoint: Checkpoint?
    public private(set) var identity: JobIdentity?
    /// Folders whose entry in their parent this command has fsynced.
    private var durableDirectories: Set<String> = []

    public init(job: JobConfig, fs: any FileSystem = PosixFileSystem()) {
        self.layout = ArchiveLayout(root: job.archive.root, job: job.name)
        self.fs = fs
        self.settings = job.archive
        self.jobName = job.name
        self.store = ManifestStore(directory: layout.manifestDirectory, fs: fs, fileMode: job.archive.fileMode)
        let now = Date()
        var stamp: [UInt8] = []
        appendRFC3339(microseconds: Int64(now.timeIntervalSince1970) * 1_000_000, to: &stamp)
        let compact = String(decoding: stamp.filter { $0 != 0x2D && $0 != 0x3A }, as: UTF8.self)
        self.runID = compact + "-" + String(getpid())
    }

    /// Creates the job's folders (fsyncing each new one into its parent) and takes the lock.
    public func openForWriting() throws -> JobLock {
        try createDirectories(layout.metaDirectory)
        try createDirectories(layout.manifestDirectory)
        try createDirectories(layout.dataDirectory)
        let lock = try JobLock(path: layout.lockFile, mode: settings.fileMode)
        // Folders an earlier, killed run created may not be in their parents on disk yet.
        try fs.syncDirectory(parentDirectory(of: layout.jobRoot))
        try makeDirectoryChainDurable(layout.manifestDirectory)
        try makeDirectoryChainDurable(layout.dataDirectory)
        return lock
    }

    /// Creates a directory and makes each directory it created durable in its parent.
    public func createDirectories(_ path: String) throws {
        for created in try fs.createDirectories(path, mode: settings.directoryMode) {
            try fs.syncDirectory(parentDirectory(of: created))
        }
    }

    /// Reads job.json, the manifest and the checkpoint without changing anything (status, cat, verify).
    public func load() throws -> ManifestDamage? {
        identity = try JobIdentity.load(from: layout.identityFile, fs: fs)
        let (manifest, damage) = try store.read()
        self.manifest = manifest
        checkpoint = try Checkpoint.load(from: layout.checkpointFile, fs: fs)
        return damage
    }

    /// DESIGN.md "Recovery", the archive side: torn tail, checkpoint against manifest, strays.
    public func recover() throws -> RecoveryReport {
        var report = RecoveryReport()
        identity = try JobIdentity.load(from: layout.identityFile, fs: fs)
        let (manifest, damage) = try store.read()
        self.manifest = manifest
        if let damage, !damage.isTornTail {
            throw FeedArchiveError.data(
                path: "\(damage.file):\(damage.line)",
                message: "the manifest is damaged before its last line: \(damage.message)",
                hint: "nothing was changed; run `feedarchive verify \(jobName)` for the full picture and restore the manifest from a copy")
        }
        // Check everything before changing anything: a refusal must leave the archive as it was.
        checkpoint = try Checkpoint.load(from: layout.checkpointFile, fs: fs)
        let tail = manifest.tailSeq
        if let checkpoint {
            if checkpoint.manifestSeq > tail {
                let torn = damage.map { " The line after seq \(tail) (\($0.file):\($0.line)) is damaged: \($0.message); it was committed, so it is not an unfinished append." } ?? ""
                throw FeedArchiveError.data(
                    path: layout.checkpointFile,
                    message: "the checkpoint (manifest seq \(checkpoint.manifestSeq)) is ahead of the manifest (last intact seq \(tail)): changes it claims are archived have no manifest line.\(torn)",
                    hint: "nothing was changed. Restore the manifest from a copy, or compare with `feedarchive verify \(jobName)` before moving the checkpoint aside")
            }
            if checkpoint.manifestSeq > 0 && hashOfLine(checkpoint.manifestSeq) != checkpoint.manifestHash {
                throw FeedArchiveError.data(
                    path: layout.checkpointFile,
                    message: "the checkpoint names manifest seq \(checkpoint.manifestSeq) with hash \(checkpoint.manifestHash.prefix(12))…, but that line hashes differently: the checkpoint belongs to another manifest",
                    hint: "nothing was changed; check that \(layout.jobRoot) is the archive this job writes")
            }
        }
        if let damage {
            try fs.truncate(damage.file, to: damage.offset)
            report.cutTornLine = "\(damage.file):\(damage.line): \(damage.message)"
        }
        try store.syncTail()  // what we now trust as committed must be on disk
        if tail > 0 && (checkpoint?.manifestSeq ?? 0) < tail {
            guard let token = manifest.liveToken else {
                throw FeedArchiveError.data(path: layout.manifestDirectory, message: "the manifest has no live line to start from")
            }
            let from = checkpoint?.manifestSeq ?? 0
            try writeCheckpoint(token: token)
            report.rolledForward = (from, tail)
        }
        report.quarantined = try quarantineStrays()
        return report
    }

    /// SHA-256 of manifest line `seq` (the next line's `prev`, or the tail hash).
    func hashOfLine(_ seq: Int64) -> String? {
        guard seq >= 1, seq <= manifest.tailSeq else { return nil }
        return seq == manifest.tailSeq ? manifest.tailHash : manifest.entries[Int(seq)].prev
    }

    /// Every regular file under data/, relative to the job root.
    public func dataFiles() throws -> [String] {
        var files: [String] = []
        func walk(_ relative: String) throws {
            guard let names = try fs.list(layout.absolute(relative)) else { return }
            for name in names.sorted() {
                let child = relative + "/" + name
                if fs.isDirectory(layout.absolute(child)) { try walk(child) } else { files.append(child) }
            }
        }
        try walk("data")
        return files
    }

    /// Moves `.tmp` files and blobs no manifest line names into `quarantine/<run>/`.
    private func quarantineStrays() throws -> [String] {
        let named = Set(manifest.entries.compactMap(\.path))
        var strays = try dataFiles().filter { !named.contains($0) }
        for name in try fs.list(layout.metaDirectory) ?? [] where name.hasSuffix(".tmp") {
            strays.append("_feedarchive/" + name)
        }
        for relative in strays {
            let target = layout.quarantineDirectory + "/" + runID + "/" + relative
            try createDirectories(parentDirectory(of: target))
            try fs.rename(layout.absolute(relative), to: target)
            try fs.syncDirectory(parentDirectory(of: target))
            try fs.syncDirectory(parentDirectory(of: layout.absolute(relative)))
        }
        return strays
    }

    /// Writes job.json on the first run; compares it on every later one.
    public func establishIdentity(source: SourceIdentity, kind: String, origin: () async throws -> ContinuationToken) async throws -> JobIdentity {
        if let identity {
            guard identity.sourceKind == kind else {
                throw FeedArchiveError.data(
                    path: layout.identityFile,
                    message: "this archive was written from a \(identity.sourceKind) source, the job now reads \(kind)")
            }
            guard identity.sourceFingerprint == source.fingerprint else {
                let changed = Set(identity.source.keys).union(source.facts.keys).sorted().compactMap { key -> String? in
                    let old = identity.source[key] ?? "-", new = source.facts[key] ?? "-"
                    return old == new ? nil : "\(key): \(old) -> \(new)"
                }
                throw FeedArchiveError.data(
                    path: layout.identityFile,
                    message: "the source is not the one this archive was made from (\(changed.joined(separator: "; ")))",
                    hint: "if the new source really continues this feed, start a new epoch: `feedarchive epoch \(jobName) --from beginning --reason \"...\"`")
            }
            return identity
        }
        let token = try await origin()
        let created = JobIdentity(job: jobName, identity: source, kind: kind, originToken: token.encoded, timeZone: settings.timeZone)
        try created.write(to: layout.identityFile, fs: fs, mode: settings.fileMode)
        identity = created
        return created
    }

    /// Starts a lineage: an `epoch` line whose `to_token` is where reading begins, then the checkpoint.
    public func startEpoch(token: ContinuationToken, reason: String) throws {
        let entry = ManifestEntry(kind: .epoch, lineage: "live", toToken: token.encoded, run: runID, reason: reason)
        try store.append(entry, to: &manifest)
        try writeCheckpoint(token: token.encoded)
    }

    /// Replaces job.json after an operator-approved source change (`feedarchive epoch`).
    public func replaceIdentity(_ identity: JobIdentity) throws {
        try identity.write(to: layout.identityFile, fs: fs, mode: settings.fileMode)
        self.identity = identity
    }

    /// Steps 5 to 7 of the commit protocol for a finished blob: rename into place, fsync the
    /// directory, append the manifest line (the commit point), replace the checkpoint.
    public func commit(blob writer: BlobWriter, relativePath: String, entry: ManifestEntry, newToken: String?) throws -> BlobWriter.Result {
        let result = try writer.finish()
        let final = layout.absolute(relativePath)
        if let existing = manifest.blob(named: relativePath) {
            // A backfill re-reading a range a blob already holds: same bytes are skipped (the
            // line still records the backfill's progress) or, when the file was lost, put back;
            // other bytes under the same name are a contradiction nobody should resolve silently.
            guard existing.sha256 == result.sha256 else {
                try fs.remove(writer.tempPath)
                throw FeedArchiveError.data(
                    path: final,
                    message: "a blob with this name already exists with SHA-256 \((existing.sha256 ?? "").prefix(16))…, the re-read batch hashes to \(result.sha256.prefix(16))…: the source returned other data for the same positions",
                    hint: "nothing was written. The same changes compress to other bytes when archive.level, archive.workers or the zstd library changed since the blob was written; if so, put the old settings back for this backfill (PostgreSQL jobs without archive.workers compressed with workers before feedarchive 0.6.0 and without since: for a blob above 2 MiB of JSON written before, set `workers: 1`; any number of workers gives the same bytes). Otherwise compare the source with `feedarchive cat`, and if the range cannot be recovered, sign it off with `feedarchive ack-gap`")
            }
            if try fs.size(final) == result.bytes && fileHash(final) == result.sha256 {
                try fs.remove(writer.tempPath)
            } else {
                try fs.rename(writer.tempPath, to: final)  // the lost or damaged blob, restored
                try fs.syncDirectory(parentDirectory(of: final))
            }
        } else {
            try fs.rename(writer.tempPath, to: final)
            try fs.syncDirectory(parentDirectory(of: final))
        }
        try makeDirectoryChainDurable(parentDirectory(of: final))
        var entry = entry
        entry.path = relativePath
        entry.sha256 = result.sha256
        entry.bytes = result.bytes
        entry.rawBytes = result.rawBytes
        try store.append(entry, to: &manifest)
        if let newToken { try writeCheckpoint(token: newToken) }
        return result
    }

    /// fsyncs the parent of every folder from `directory` up to the job root, once per folder
    /// per command: a folder a killed run created (and never synced into its parent) becomes
    /// durable before a manifest line names a blob inside it.
    func makeDirectoryChainDurable(_ directory: String) throws {
        var current = directory
        while current.count > layout.jobRoot.count, !durableDirectories.contains(current) {
            try fs.syncDirectory(parentDirectory(of: current))
            durableDirectories.insert(current)
            current = parentDirectory(of: current)
        }
    }

    /// SHA-256 of a file, or nil when it cannot be read.
    func fileHash(_ path: String) -> String? {
        (try? fs.read(path)).flatMap { $0 }.map { sha256Hex($0) }
    }

    /// Appends a line that is not a blob (gap-ack, split, merge), moving the checkpoint when given a token.
    public func append(_ entry: ManifestEntry, newToken: String?) throws {
        try store.append(entry, to: &manifest)
        if let newToken { try writeCheckpoint(token: newToken) }
    }

    /// Rewrites the checkpoint with the same live token, tied to the manifest's new tail (after
    /// a line of another lineage, so the checkpoint keeps naming the last line).
    public func touchCheckpoint() throws {
        guard let token = checkpoint?.token ?? manifest.liveToken else { return }
        try writeCheckpoint(token: token)
    }

    private func writeCheckpoint(token: String) throws {
        let next = Checkpoint(token: token, manifestSeq: manifest.tailSeq, manifestHash: manifest.tailHash)
        try next.write(to: layout.checkpointFile, fs: fs, mode: settings.fileMode)
        checkpoint = next
    }
}
