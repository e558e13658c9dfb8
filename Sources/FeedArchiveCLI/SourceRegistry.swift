import FeedArchive
import FeedArchiveCosmos
import FeedArchivePostgres
import FeedArchiveSQLite

extension SourceRegistry {
    /// Every source this executable can read. Adding a source: one line here.
    static let all = SourceRegistry([
        SQLiteSourceFactory.self,
        PostgresSourceFactory.self,
        CosmosSourceFactory.self,
    ])
}
