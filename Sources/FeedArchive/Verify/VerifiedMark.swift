import Foundation

/// `_feedarchive/verified.json`: the last manifest line a clean `verify` proved, with what a
/// later verify needs to continue from there instead of from the origin: the line's hash (the
/// chain is checked on from it; `verify --full` checks the lines before it again), the live
/// token and the last position proven per partition, and the totals so far. One mark for the
/// fast verify and one for `--deep`, which decodes every record.
public struct VerifiedMark: Codable, Equatable, Sendable {
    public static let format = 1

    public struct Point: Codable, Equatable, Sendable {
        public var manifestSeq: Int64
        public var manifestHash: String
        public var liveToken: String?
        public var positions: [String: String]
        public var blobs: Int
        public var records: Int64
        public var bytes: Int64
        public var duplicateRanges: Int
        public var verifiedAt: String

        enum CodingKeys: String, CodingKey {
            case manifestSeq = "manifest_seq"
            case manifestHash = "manifest_hash"
            case liveToken = "live_token"
            case positions, blobs, records, bytes
            case duplicateRanges = "duplicate_ranges"
            case verifiedAt = "verified_at"
        }
    }

    public var format = Self.format
    public var fast: Point?
    public var deep: Point?

    public init() {}

    /// The mark, or nil when there is none or it cannot be read (verify then checks everything).
    public static func load(from path: String, fs: any FileSystem) -> VerifiedMark? {
        guard let bytes = try? fs.read(path),
            let mark = try? JSONDecoder().decode(VerifiedMark.self, from: Data(bytes)), mark.format == format
        else { return nil }
        return mark
    }

    public func write(to path: String, fs: any FileSystem, mode: mode_t) throws {
        try fs.replaceAtomically(path, json: self, mode: mode)
    }
}
