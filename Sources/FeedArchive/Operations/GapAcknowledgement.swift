/// `feedarchive ack-gap`: a person signs off a known loss between two tokens (changes the source
/// no longer holds). The manifest keeps a `gap_ack` line with the reason; verify then reports
/// the gap as acknowledged instead of as a problem. Nothing is deleted.
public enum GapAcknowledgement {
    /// Records the acknowledgement under the job lock, after recovery. Refuses tokens of two
    /// different sources (exit 64) and tokens of another source than the archive's (exit 65).
    public static func record(
        job: JobConfig, from: ContinuationToken, until: ContinuationToken, reason: String,
        fs: any FileSystem = PosixFileSystem()
    ) throws {
        guard from.kind == until.kind, from.source == until.source else {
            throw FeedArchiveError.usage("--from and --until are tokens of different sources")
        }
        let archive = JobArchive(job: job, fs: fs)
        let lock = try archive.openForWriting()
        defer { lock.release() }
        _ = try archive.recover()
        if let identity = archive.identity, let source = from.source, !identity.sourceFingerprint.hasPrefix(source) {
            throw FeedArchiveError.data(
                path: archive.layout.identityFile, message: "the tokens belong to another source than this archive's")
        }
        try archive.acknowledgeGap(from: from, until: until, reason: reason)
    }
}
