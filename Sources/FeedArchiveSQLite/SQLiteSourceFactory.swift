import FeedArchive

/// `kind: sqlite`: a table of an SQLite database read as an outbox.
public enum SQLiteSourceFactory: FeedSourceFactory {
    public static let kind = "sqlite"

    public static func make(job: JobConfig) throws -> any FeedSource {
        try SQLiteSource.make(job: job)
    }
}
