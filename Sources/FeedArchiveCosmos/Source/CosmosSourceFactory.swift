import FeedArchive

/// `kind: cosmos`: the change feed of an Azure Cosmos DB container, over REST.
public enum CosmosSourceFactory: FeedSourceFactory {
    public static let kind = "cosmos"

    public static func make(job: JobConfig) throws -> any FeedSource {
        try CosmosSource.make(job: job)
    }
}
