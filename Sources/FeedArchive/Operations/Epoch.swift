/// `feedarchive epoch`: a new lineage when continuity with the source cannot be proven (another
/// source than job.json records, a sequence that went backwards) and a person has checked that
/// this is expected: the database was restored, the table rebuilt.
public enum Epoch {
    /// Takes the job lock and recovers, records the source's identity in job.json, appends an
    /// `epoch` manifest line with `reason` and moves the checkpoint to `start` as the source
    /// resolves it. Nothing already archived is changed. Returns the new checkpoint's token.
    public static func start(
        job: JobConfig, from start: StartSpec, reason: String, source: SourceProvider,
        fs: any FileSystem = PosixFileSystem()
    ) async throws -> ContinuationToken {
        let archive = JobArchive(job: job, fs: fs)
        let lock = try archive.openForWriting()
        defer { lock.release() }
        _ = try archive.recover()
        let (identity, token, kind) = try await source.withSource(job) { source in
            (try await source.identity(), try await source.resolve(start), source.kind)
        }
        try archive.replaceIdentity(
            Self.identity(replacing: archive.identity, job: job, source: identity, kind: kind, origin: token))
        try archive.startEpoch(token: token, reason: reason)
        return token
    }

    /// job.json after an epoch. An archive's identity keeps its job, kind, origin and creation
    /// time and takes the new source's fingerprint and facts; an archive without one gets a new
    /// identity whose origin is where the epoch starts.
    static func identity(
        replacing recorded: JobIdentity?, job: JobConfig, source: SourceIdentity, kind: String,
        origin: ContinuationToken
    ) -> JobIdentity {
        guard var identity = recorded else {
            return JobIdentity(
                job: job.name, identity: source, kind: kind, originToken: origin.encoded, timeZone: job.archive.timeZone
            )
        }
        identity.sourceFingerprint = source.fingerprint
        identity.source = source.facts
        return identity
    }
}
