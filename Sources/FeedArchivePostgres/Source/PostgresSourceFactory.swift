import FeedArchive

/// `kind: postgres`: logical decoding through a replication slot with pgoutput.
public enum PostgresSourceFactory: FeedSourceFactory {
    public static let kind = "postgres"

    public static func make(job: JobConfig) throws -> any FeedSource {
        try PostgresSource.make(job: job)
    }

    /// Creates the publication for the job's tables and the slot (idempotent).
    public static func setup(job: JobConfig) async throws -> [String]? {
        let source = try PostgresSource.make(job: job)
        do {
            try await source.setup()
            await source.close()
        } catch {
            await source.close()
            throw error
        }
        let settings = source.settings
        return ["publication \(settings.publication) and slot \(settings.slot) are ready on \(settings.endpoint)"]
    }
}
