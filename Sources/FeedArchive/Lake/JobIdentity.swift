import Foundation

/// `_feedarchive/job.json`: who this archive belongs to. Written once, on the first run.
public struct JobIdentity: Codable, Equatable, Sendable {
    public static let format = 1
    public static let envelopeVersion = Envelope.version

    public var format: Int
    public var job: String
    public var sourceKind: String
    public var sourceFingerprint: String
    /// Identifying facts (file, table, system identifier…); never secrets.
    public var source: [String: String]
    public var originToken: String
    public var envelopeVersion: Int
    public var timeZone: String
    public var createdAt: String
    /// The settings that decide what blobs look like and where they go (compression, partition
    /// path, time zone, and the source's own, e.g. SQLite's document column), compared on every
    /// run. Nil in a job.json written before they were recorded.
    public var shape: [String: String]?

    enum CodingKeys: String, CodingKey {
        case format, job
        case sourceKind = "source_kind"
        case sourceFingerprint = "source_fingerprint"
        case source
        case originToken = "origin_token"
        case envelopeVersion = "envelope_version"
        case timeZone = "time_zone"
        case createdAt = "created_at"
        case shape
    }

    public init(job: String, identity: SourceIdentity, kind: String, originToken: String, timeZone: String) {
        self.format = Self.format
        self.job = job
        self.sourceKind = kind
        self.sourceFingerprint = identity.fingerprint
        self.source = identity.facts
        self.originToken = originToken
        self.envelopeVersion = Self.envelopeVersion
        self.timeZone = timeZone
        self.createdAt = formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970) * 1_000_000)
    }

    public static func load(from path: String, fs: any FileSystem) throws -> JobIdentity? {
        guard let bytes = try fs.read(path) else { return nil }
        do {
            return try JSONDecoder().decode(JobIdentity.self, from: Data(bytes))
        } catch {
            throw FeedArchiveError.data(path: path, message: "corrupt job identity: \(describeDecodingError(error))")
        }
    }

    public func write(to path: String, fs: any FileSystem, mode: mode_t) throws {
        try fs.replaceAtomically(path, json: self, pretty: true, mode: mode)
    }
}
