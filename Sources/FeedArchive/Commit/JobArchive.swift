import Foundation

/// The on-disk archive of one job (`<lake>/<job>`): its layout, job.json, manifest and
/// checkpoint as this command sees them. One instance per command; writing commands go through
/// the commit protocol (`CommitProtocol.swift`) and recovery (`Recovery.swift`) under its lock.
public final class JobArchive {
    public let layout: ArchiveLayout
    public let fs: any FileSystem
    public let settings: ArchiveSettings
    public let jobName: String
    /// The job file, for messages.
    public let jobFile: String
    public let store: ManifestStore
    /// Identifies this command's writes in manifest lines and quarantine folders.
    public let runID: String
    public internal(set) var manifest = Manifest()
    public internal(set) var checkpoint: Checkpoint?
    public internal(set) var identity: JobIdentity?
    /// Folders this command created or found, and those whose entry in their parent it has
    /// fsynced: the reading thread creates folders while the commit thread makes them durable.
    let folders = FolderCache()
    /// A blob commit's checkpoint not written yet (`writeCheckpoint(deferrable:)`).
    /// The token, and the manifest line it follows.
    var pendingCheckpoint: (token: String, seq: Int64)?
    var checkpointWrittenAt: Double?
    /// The first failed blob commit of this command: every blob submitted after it fails too,
    /// so no line follows a batch that was not committed. Touched only on the commit thread.
    var commitFailure: (any Error)?
    /// Seconds between checkpoint writes during a run.
    static let checkpointInterval = 1.0

    public init(job: JobConfig, fs: any FileSystem = PosixFileSystem()) {
        self.layout = ArchiveLayout(root: job.archive.root, job: job.name)
        self.fs = fs
        self.settings = job.archive
        self.jobName = job.name
        self.jobFile = job.file
        self.store = ManifestStore(directory: layout.manifestDirectory, fs: fs, fileMode: job.archive.fileMode)
        let now = Date()
        var stamp: [UInt8] = []
        appendRFC3339(microseconds: Int64(now.timeIntervalSince1970) * 1_000_000, to: &stamp)
        let compact = String(decoding: stamp.filter { $0 != 0x2D && $0 != 0x3A }, as: UTF8.self)
        self.runID = compact + "-" + String(getpid())
    }

    /// Reads job.json, the manifest and the checkpoint without changing anything (status, cat, verify).
    public func load() throws -> ManifestDamage? {
        identity = try JobIdentity.load(from: layout.identityFile, fs: fs)
        let (manifest, damage) = try store.read()
        self.manifest = manifest
        checkpoint = try Checkpoint.load(from: layout.checkpointFile, fs: fs)
        return damage
    }

    /// Reads job.json, the checkpoint and the manifest from the checkpoint's line on, without
    /// changing anything (status): the same cost after years as in the first week. The whole
    /// manifest when the checkpoint does not hold the totals.
    public func loadTail() throws -> ManifestDamage? {
        identity = try JobIdentity.load(from: layout.identityFile, fs: fs)
        checkpoint = try Checkpoint.load(from: layout.checkpointFile, fs: fs)
        let (manifest, damage) =
            if let checkpoint, checkpoint.totals != nil {
                try store.readTail(from: checkpoint.manifestSeq)
            } else {
                try store.read()
            }
        self.manifest = manifest
        return damage
    }

    /// SHA-256 of manifest line `seq` (the next line's `prev`, or the tail hash).
    func hashOfLine(_ seq: Int64) -> String? {
        guard seq >= max(1, manifest.baseSeq), seq <= manifest.tailSeq else { return nil }
        return seq == manifest.tailSeq ? manifest.tailHash : manifest.entries[Int(seq - manifest.baseSeq)].prev
    }

    /// Every file under data/, relative to the job root. Refuses, rather than walks into, a
    /// symbolic link (it would lead outside the archive) and another job's archive (its files
    /// would look like strays to recovery).
    public func dataFiles() throws -> [String] {
        var files: [String] = []
        func walk(_ relative: String) throws {
            let path = layout.absolute(relative)
            switch fs.entryKind(path) {
            case nil: return
            case .symbolicLink:
                throw FeedArchiveError.data(
                    path: path,
                    message:
                        "a symbolic link inside the archive: feedarchive never follows links inside a job's archive (recovery would move, and verify read, files outside it)",
                    hint: "nothing was changed; move the link out of \(layout.jobRoot)")
            case .directory:
                guard let names = try fs.list(path) else { return }
                if names.contains("_feedarchive") {
                    throw FeedArchiveError.badJobFile(
                        place: path,
                        message:
                            "another job's archive lies inside the archive of job \(jobName): its files would be taken for strays and moved to quarantine. Nothing was changed; give that job an archive.root outside \(layout.jobRoot)"
                    )
                }
                for name in names.sorted() { try walk(relative + "/" + name) }
            case .file, .other:
                files.append(relative)
            }
        }
        try walk("data")
        return files
    }

    /// Refuses (exit 78) a job root inside another job's archive, where that job's recovery
    /// would take this job's files for its own strays.
    func checkNotInsideAnotherArchive() throws {
        if fs.entryKind(layout.metaDirectory) == .symbolicLink {
            throw FeedArchiveError.data(
                path: layout.metaDirectory,
                message:
                    "a symbolic link where the job's own folder belongs: feedarchive never follows links inside a job's archive",
                hint: "nothing was changed; put the folder itself at \(layout.metaDirectory)")
        }
        // The root as written (`..` resolved by name) and as the kernel resolves it: both chains
        // of folders above it are checked.
        let written = URL(fileURLWithPath: absolutePath(layout.jobRoot)).standardizedFileURL.path
        var chains = [parentDirectory(of: written)]
        var existing = written
        while fs.entryKind(existing) == nil, existing != "/", !existing.isEmpty {
            existing = parentDirectory(of: existing)
        }
        if let real = realpath(existing, nil) {
            chains.append(parentDirectory(of: String(cString: real) + written.dropFirst(existing.count)))
            free(real)
        }
        for start in chains { try checkNoArchive(above: start) }
    }

    private func checkNoArchive(above start: String) throws {
        var current = start
        while current != "/" && current != "." && !current.isEmpty {
            if fs.entryKind(current + "/_feedarchive/job.json") != nil
                || fs.entryKind(current + "/_feedarchive/manifest") != nil
            {
                let owner =
                    (try? JobIdentity.load(from: current + "/_feedarchive/job.json", fs: fs))??.job
                    ?? lastComponent(of: current)
                throw FeedArchiveError.badJobFile(
                    place: jobFile.isEmpty ? "archive.root" : "\(jobFile): archive.root",
                    message:
                        "the archive of job \(jobName) (\(layout.jobRoot)) would lie inside the archive of job \(owner) at \(current), whose recovery moves files it does not know into quarantine; choose an archive.root outside \(current)"
                )
            }
            let parent = parentDirectory(of: current)
            if parent == current { break }
            current = parent
        }
    }

    private func absolutePath(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    /// Writes job.json on the first run; compares it on every later one.
    ///
    /// `shape` holds the settings that decide what blobs look like and where they go (see
    /// `JobIdentity.shape`); a change of one is refused (exit 78), and an archive made before
    /// job.json recorded them gets them recorded now.
    public func establishIdentity(
        source: SourceIdentity, kind: String, shape: [String: String] = [:], transformChanged: Bool = false,
        origin: () async throws -> ContinuationToken
    ) async throws -> JobIdentity {
        if var identity {
            guard identity.job == jobName else {
                throw FeedArchiveError.badJobFile(
                    place: jobFile.isEmpty ? "archive.root" : "\(jobFile): archive.root",
                    message:
                        "\(layout.identityFile) says this archive belongs to job '\(identity.job)', not '\(jobName)': nothing was changed. If the job was renamed on purpose, change \"job\" in that file to the new name"
                )
            }
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
                    message:
                        "the source is not the one this archive was made from (\(changed.joined(separator: "; ")))",
                    hint:
                        "if the new source really continues this feed, start a new epoch: `feedarchive epoch \(jobName) --from beginning --reason \"...\"`"
                )
            }
            guard let recorded = identity.shape else {
                // An archive made before job.json recorded its shape: what it does record (the
                // time zone) and the blobs it holds must agree with the settings now.
                var known = ["archive.time_zone": identity.timeZone]
                let lines = manifest.isComplete ? manifest.entries : try store.read().0.entries
                if let blob = lines.last(where: { $0.kind == .blob })?.path,
                    let compression = Compression.of(path: blob)
                {
                    known["archive.compression"] = compression.rawValue
                }
                try requireSameShape(recorded: known, now: shape.filter { known[$0.key] != nil })
                identity.shape = shape
                try replaceIdentity(identity)
                return identity
            }
            if transformChanged && recorded["transform"] != shape["transform"] {
                // The operator confirmed the new transform section: from here on blobs carry
                // the new hash (each manifest line records the one it was written with).
                var merged = recorded
                merged["transform"] = shape["transform"]
                try requireSameShape(recorded: merged, now: shape)
                identity.shape = shape
                try replaceIdentity(identity)
                return identity
            }
            try requireSameShape(recorded: recorded, now: shape)
            return identity
        }
        let token = try await origin()
        var created = JobIdentity(
            job: jobName, identity: source, kind: kind, originToken: token.encoded, timeZone: settings.timeZone)
        created.shape = shape
        try created.write(to: layout.identityFile, fs: fs, mode: settings.fileMode)
        identity = created
        return created
    }

    /// Refuses (78) settings that shape the archive when they differ from the recorded ones.
    private func requireSameShape(recorded: [String: String], now shape: [String: String]) throws {
        let spell = { (value: String?) in value.map { $0.isEmpty ? "(not set)" : "'\($0)'" } ?? "(not set)" }
        let changed = Set(recorded.keys).union(shape.keys).sorted().compactMap { key -> String? in
            let old = recorded[key] ?? "", new = shape[key] ?? ""
            return old == new ? nil : "\(key): \(spell(recorded[key])) -> \(spell(shape[key]))"
        }
        if changed.count == 1, recorded["transform"] != shape["transform"] {
            throw FeedArchiveError.badJobFile(
                place: jobFile.isEmpty ? layout.identityFile : jobFile,
                message:
                    "the transform section changed since the last run (\(changed[0])): blobs from now on would hold other bytes than a backfill of the same range made before. Nothing was changed; put the section back, or confirm the change with `feedarchive run --transform-changed` (each manifest line records the transform it was written with)"
            )
        }
        guard changed.isEmpty else {
            throw FeedArchiveError.badJobFile(
                place: jobFile.isEmpty ? layout.identityFile : jobFile,
                message:
                    "settings that shape the archive changed since \(layout.jobRoot) was made (\(changed.joined(separator: "; "))): blobs from now on would not match the ones before (other names, folders or envelope contents). Nothing was changed; put the settings back, or archive under a new job name"
            )
        }
    }

    /// Replaces job.json after an operator-approved source change (`feedarchive epoch`).
    public func replaceIdentity(_ identity: JobIdentity) throws {
        try identity.write(to: layout.identityFile, fs: fs, mode: settings.fileMode)
        self.identity = identity
    }

    /// SHA-256 of a file, or nil when it cannot be read.
    func fileHash(_ path: String) -> String? {
        (try? fs.read(path)).flatMap { $0 }.map { sha256Hex($0) }
    }
}

/// The folders a command created or found (so a blob costs no `stat` of its folder) and those
/// whose entry in their parent it has fsynced. Locked: the reading thread creates a batch's
/// folder while the commit thread makes the folders of earlier batches durable.
final class FolderCache: @unchecked Sendable {
    // @unchecked: both sets are only touched under `lock`.
    private let lock = NSLock()
    private var existing: Set<String> = []
    private var durable: Set<String> = []

    func exists(_ path: String) -> Bool { lock.withLock { existing.contains(path) } }
    func noteExists(_ path: String) { lock.withLock { _ = existing.insert(path) } }
    func isDurable(_ path: String) -> Bool { lock.withLock { durable.contains(path) } }
    func noteDurable(_ path: String) { lock.withLock { _ = durable.insert(path) } }
}
