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
        if let (from, to) = rolledForward {
            lines.append("recovery: rolled the checkpoint forward from manifest seq \(from) to \(to)")
        }
        for path in quarantined { lines.append("recovery: moved \(path) to quarantine (no manifest line names it)") }
        return lines
    }
}

extension JobArchive {
    /// DESIGN.md "Recovery", the archive side: torn tail, checkpoint against manifest, strays.
    ///
    /// Reads the manifest from the line the checkpoint names on (`readingWholeManifest`: all
    /// of it, for a backfill that resumes its lineage), so a run costs the same in the first
    /// week and after years. Damage before that line, and strays a crash of the machine left
    /// unnamed, are verify's to find.
    public func recover(readingWholeManifest: Bool = false) throws -> RecoveryReport {
        var report = RecoveryReport()
        identity = try JobIdentity.load(from: layout.identityFile, fs: fs)
        let saved = try Checkpoint.load(from: layout.checkpointFile, fs: fs)
        let (manifest, damage) =
            if let saved, !readingWholeManifest {
                try store.readTail(from: saved.manifestSeq)
            } else {
                try store.read()
            }
        self.manifest = manifest
        if let damage, !damage.isTornTail {
            throw FeedArchiveError.data(
                path: "\(damage.file):\(damage.line)",
                message: "the manifest is damaged before its last line: \(damage.message)",
                hint:
                    "nothing was changed; run `feedarchive verify \(jobName)` for the full picture and restore the manifest from a copy"
            )
        }
        // Check everything before changing anything: a refusal must leave the archive as it was.
        checkpoint = saved
        let tail = manifest.tailSeq
        if let checkpoint {
            if checkpoint.manifestSeq > tail {
                let torn =
                    damage.map {
                        " The line after seq \(tail) (\($0.file):\($0.line)) is damaged: \($0.message); it was committed, so it is not an unfinished append."
                    } ?? ""
                throw FeedArchiveError.data(
                    path: layout.checkpointFile,
                    message:
                        "the checkpoint (manifest seq \(checkpoint.manifestSeq)) is ahead of the manifest (last intact seq \(tail)): changes it claims are archived have no manifest line.\(torn)",
                    hint:
                        "nothing was changed. Restore the manifest from a copy, or compare with `feedarchive verify \(jobName)` before moving the checkpoint aside"
                )
            }
            if checkpoint.manifestSeq > 0 && hashOfLine(checkpoint.manifestSeq) != checkpoint.manifestHash {
                throw FeedArchiveError.data(
                    path: layout.checkpointFile,
                    message:
                        "the checkpoint names manifest seq \(checkpoint.manifestSeq) with hash \(checkpoint.manifestHash.prefix(12))…, but that line hashes differently: the checkpoint belongs to another manifest",
                    hint: "nothing was changed; check that \(layout.jobRoot) is the archive this job writes")
            }
        }
        if let damage {
            try fs.truncate(damage.file, to: damage.offset)
            report.cutTornLine = "\(damage.file):\(damage.line): \(damage.message)"
        }
        try store.syncTail()  // what we now trust as committed must be on disk
        if tail > 0 && (checkpoint?.manifestSeq ?? 0) < tail {
            guard let token = manifest.liveToken ?? (manifest.isComplete ? nil : checkpoint?.token) else {
                throw FeedArchiveError.data(
                    path: layout.manifestDirectory, message: "the manifest has no live line to start from")
            }
            let from = checkpoint?.manifestSeq ?? 0
            try writeCheckpoint(token: token)
            report.rolledForward = (from, tail)
        }
        report.quarantined = try quarantineStrays()
        return report
    }

    /// Moves temp files, and the blob a killed run renamed into place but never named in the
    /// manifest, into `quarantine/<run>/`. Lists two small folders and reads one small file:
    /// `data/` is not walked (verify does that).
    func quarantineStrays() throws -> [String] {
        var strays: [String] = []
        for name in try fs.list(layout.tempDirectory) ?? [] {
            strays.append("_feedarchive/tmp/" + name)
        }
        for name in try fs.list(layout.metaDirectory) ?? [] where name.hasSuffix(".tmp") {
            strays.append("_feedarchive/" + name)
        }
        let placing = try uncommittedPlacements()
        strays += placing
        // A folder of its own: run ids can repeat (a fixed pid in a container, a clock step).
        var folder = runID
        var attempt = 1
        while !strays.isEmpty, fs.entryKind(layout.quarantineDirectory + "/" + folder) != nil {
            attempt += 1
            folder = runID + "-" + String(attempt)
        }
        for relative in strays {
            let target = layout.quarantineDirectory + "/" + folder + "/" + relative
            try createDirectories(parentDirectory(of: target))
            try fs.rename(layout.absolute(relative), to: target)
            try fs.syncDirectory(parentDirectory(of: target))
            try fs.syncDirectory(parentDirectory(of: layout.absolute(relative)))
        }
        if fs.entryKind(layout.placingFile) != nil { try fs.remove(layout.placingFile) }
        return strays
    }

    /// The blobs `_feedarchive/placing` names that no manifest line names and that are there:
    /// a run renamed them into place and died before their lines were committed.
    private func uncommittedPlacements() throws -> [String] {
        guard let bytes = try fs.read(layout.placingFile), let text = String(validating: bytes, as: UTF8.self) else {
            return []
        }
        var strays: [String] = []
        for line in text.split(separator: "\n") {
            guard let space = line.firstIndex(of: " "), let seq = Int64(line[..<space]) else { continue }
            let path = String(line[line.index(after: space)...])
            guard path.hasPrefix("data/"), !path.contains("/../"), fs.entryKind(layout.absolute(path)) == .file else {
                continue
            }
            // Handled by an earlier recovery, or committed before the lines read.
            if seq <= manifest.baseSeq { continue }
            if seq <= manifest.tailSeq, manifest.entries[Int(seq - manifest.baseSeq - 1)].path == path { continue }
            // Another line may name the same file (a re-read that found the same bytes there).
            if try committedBlob(named: path) == nil { strays.append(path) }
        }
        return strays
    }
}
