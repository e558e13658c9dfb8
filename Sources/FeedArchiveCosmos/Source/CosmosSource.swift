import FeedArchive
import Foundation
import Synchronization

/// Azure Cosmos DB's change feed over the REST API (no Swift SDK exists). Partitions are feed
/// ranges: one per partition key range when the job starts; a split gives the children their
/// own partitions, a merge keeps the feed range and reads it through the merged range by EPK.
/// Each partition's cursor is a `FeedRangeCursor`; the token records the feed mode.
///
/// Its concerns live in extensions: the container and its ranges, tokens, and the errors a
/// user can act on (`Source/`); reading, requests made ahead and routing after a split or
/// merge (`ChangeFeed/`). Requests go through `CosmosRESTClient` (`REST/`, `HTTP/`).
public final class CosmosSource: FeedSource, Sendable {
    public let kind = "cosmos"
    public let settings: CosmosSourceSettings
    let client: CosmosRESTClient

    /// A live partition key range from `/pkranges`.
    struct PhysicalRange: Equatable, Sendable {
        var id: String
        var min: String
        var max: String
    }

    /// The account's name, and the container's resource id and partition key path.
    struct ContainerInfo: Sendable {
        var account: String
        var rid: String
        var keyPath: [String]
    }

    /// What requests share, behind one lock: the container, its ranges, the read-ahead
    /// chains and the run's plan.
    struct State {
        var info: ContainerInfo?
        var ranges: [PhysicalRange]?
        var chains: [String: Chain] = [:]
        /// The run's partitions, cursors and heads (from `head(for:)`): the next partition's
        /// chain starts while the one before it is read.
        var plan: (cursors: [String: String], heads: [String: String])?
        var planned: Set<String> = []
        var firstCount: Int?
    }
    let state = Mutex(State())

    /// `proxy`: the HTTP proxy to reach the account through (`make` takes it from the
    /// environment, as curl does: `https_proxy`, `no_proxy`, …).
    init(settings: CosmosSourceSettings, proxy: HTTPProxy?) {
        self.settings = settings
        self.client = CosmosRESTClient(settings: settings, proxy: proxy)
    }

    public convenience init(settings: CosmosSourceSettings) {
        self.init(settings: settings, proxy: nil)
    }

    /// The source for a job file; refuses start positions the feed mode cannot serve.
    public static func make(job: JobConfig) throws -> CosmosSource {
        let settings = try CosmosSourceSettings.parse(job.sourceSettings)
        if settings.mode == .allVersionsAndDeletes {
            switch job.start {
            case .beginning, .time:
                throw FeedArchiveError.badJobFile(
                    place: job.file,
                    message:
                        "start: \(job.start) is not possible in all_versions_and_deletes mode: that feed starts from now or from a token (set start: now)"
                )
            default: break
            }
        }
        let proxy: HTTPProxy?
        do {
            proxy = try HTTPProxy.resolve(for: settings.endpoint, environment: ProcessInfo.processInfo.environment)
        } catch let invalid as HTTPProxy.Invalid {
            throw FeedArchiveError.badJobFile(
                place: "\(invalid.variable) (environment, for \(job.file))", message: invalid.message)
        }
        if let bundle = ProcessInfo.processInfo.environment["SSL_CERT_FILE"], !bundle.isEmpty,
            settings.endpoint.scheme == "https",
            !FileManager.default.isReadableFile(atPath: bundle)
        {
            throw FeedArchiveError.badJobFile(
                place: "SSL_CERT_FILE (environment, for \(job.file))",
                message: "\(bundle) is not a readable file of PEM certificates")
        }
        return CosmosSource(settings: settings, proxy: proxy)
    }

    var containerPath: String { "dbs/\(settings.database)/colls/\(settings.container)" }

    public func identity() async throws -> SourceIdentity {
        let info = try await containerInfo()
        return SourceIdentity(facts: [
            "account": info.account, "database": settings.database, "container": settings.container,
            "container_rid": info.rid,
        ])
    }

    /// Reads ahead are left to finish (see `readPage`: no cancelling); the client starts no
    /// request after this.
    public func close() async {
        state.withLock { $0.chains = [:] }
        client.close()
    }
}
