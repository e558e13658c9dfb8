/// How an operation reaches a job's source. The operation opens it only when it gets that far
/// (after the job lock and recovery, for the operations that write), so a source that cannot
/// be opened does not hide an earlier refusal.
public enum SourceProvider {
    /// Made by the registry's factory for the job's `source.kind`, and closed after use.
    case registry(SourceRegistry)
    /// A source the caller made and closes itself (tests, programs that embed feedarchive).
    case source(any FeedSource)

    /// Runs `body` with the job's source.
    public func withSource<T>(_ job: JobConfig, _ body: (any FeedSource) async throws -> T) async throws -> T {
        switch self {
        case .registry(let registry): try await registry.withSource(job, body)
        case .source(let source): try await body(source)
        }
    }
}
