import Foundation

/// `_feedarchive/checkpoint.json`: the token the next run starts from, tied to the manifest
/// line it reflects.
public struct Checkpoint: Codable, Equatable, Sendable {
    public static let format = 1

    public var format: Int
    public var token: String
    /// The manifest line this checkpoint reflects (its seq and the SHA-256 of its bytes).
    public var manifestSeq: Int64
    public var manifestHash: String
    public var updatedAt: String
    /// The blob lines up to `manifestSeq`, summed, so `status` need not read the manifest.
    /// Absent in checkpoints written before it was kept.
    public var totals: ArchiveTotals?

    enum CodingKeys: String, CodingKey {
        case format, token, totals
        case manifestSeq = "manifest_seq"
        case manifestHash = "manifest_hash"
        case updatedAt = "updated_at"
    }

    public init(token: String, manifestSeq: Int64, manifestHash: String, totals: ArchiveTotals? = nil) {
        self.format = Self.format
        self.totals = totals
        self.token = token
        self.manifestSeq = manifestSeq
        self.manifestHash = manifestHash
        self.updatedAt = formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970) * 1_000_000)
    }

    /// Reads the checkpoint; nil when there is none. A damaged file is a data error naming it.
    public static func load(from path: String, fs: any FileSystem) throws -> Checkpoint? {
        guard let bytes = try fs.read(path) else { return nil }
        do {
            let checkpoint = try JSONDecoder().decode(Checkpoint.self, from: Data(bytes))
            guard checkpoint.format == format else {
                throw FeedArchiveError.data(
                    path: path,
                    message:
                        "checkpoint format \(checkpoint.format) is not supported (this feedarchive writes \(format))")
            }
            _ = try ContinuationToken.decode(checkpoint.token, what: "the checkpoint token")
            return checkpoint
        } catch let error as FeedArchiveError {
            throw FeedArchiveError.data(path: path, message: "corrupt checkpoint: \(error)", hint: rebuildHint(path))
        } catch {
            throw FeedArchiveError.data(
                path: path, message: "corrupt checkpoint: \(describeDecodingError(error))", hint: rebuildHint(path))
        }
    }

    private static func rebuildHint(_ path: String) -> String {
        "the checkpoint is derived from the manifest: move it aside (mv \(path) \(path).bad) and the next run rebuilds it from the manifest tail"
    }

    /// Replaces the checkpoint durably (temp file, fsync, rename, fsync directory).
    public func write(to path: String, fs: any FileSystem, mode: mode_t) throws {
        try fs.replaceAtomically(path, json: self, mode: mode)
    }
}

/// A readable one-line account of a JSONDecoder failure.
public func describeDecodingError(_ error: any Error) -> String {
    switch error {
    case DecodingError.dataCorrupted(let context):
        return "not valid JSON (\(context.underlyingError.map { "\($0)" } ?? context.debugDescription))"
    case DecodingError.keyNotFound(let key, _):
        return "missing field '\(key.stringValue)'"
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
        return "field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type"
    default:
        return "\(error)"
    }
}
