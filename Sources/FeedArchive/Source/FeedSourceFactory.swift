/// Makes a source from a job's `source` section. Each source module has one; the executable
/// lists them in one place (`SourceRegistry`), so adding a source touches its module, its tests
/// and that list.
public protocol FeedSourceFactory: SendableMetatype {
    /// The `source.kind` this factory reads, e.g. `sqlite`.
    static var kind: String { get }
    /// A source for `job`; a bad `source` section is exit 78 naming the place.
    static func make(job: JobConfig) throws -> any FeedSource
    /// Creates what the source needs on its server before the first run (PostgreSQL: the
    /// publication and the slot). Idempotent. Returns what it made sure of, one line each, for
    /// `feedarchive setup`; nil when the source needs no setup.
    static func setup(job: JobConfig) async throws -> [String]?
}

extension FeedSourceFactory {
    /// Nothing to create: the source is made (its settings checked, its database opened) and
    /// closed, so a bad job is reported by `setup` as by `run`.
    public static func setup(job: JobConfig) async throws -> [String]? {
        let source = try make(job: job)
        await source.close()
        return nil
    }
}

/// The sources a program knows, by kind.
public struct SourceRegistry: Sendable {
    public let factories: [any FeedSourceFactory.Type]

    public init(_ factories: [any FeedSourceFactory.Type]) {
        self.factories = factories
    }

    /// The factory for the job's `source.kind`; an unknown kind is exit 78 naming the known ones.
    public func factory(for job: JobConfig) throws -> any FeedSourceFactory.Type {
        for factory in factories where factory.kind == job.sourceKind { return factory }
        var known: [String] = []
        for factory in factories { known.append(factory.kind) }
        throw FeedArchiveError.badJobFile(
            place: job.sourceSettings.place,
            message: "unknown source kind '\(job.sourceKind)' (known: \(known.joined(separator: ", ")))")
    }

    /// A source for `job`.
    public func makeSource(for job: JobConfig) throws -> any FeedSource {
        try factory(for: job).make(job: job)
    }

    /// Opens the job's source, runs `body` with it, and closes it on every path.
    public func withSource<T>(_ job: JobConfig, _ body: (any FeedSource) async throws -> T) async throws -> T {
        let source = try makeSource(for: job)
        do {
            let result = try await body(source)
            await source.close()
            return result
        } catch {
            await source.close()
            throw error
        }
    }
}
