import Foundation

/// Where everything of one job lives under the lake root (DESIGN.md "Layout").
public struct ArchiveLayout: Sendable {
    /// Dead letters, relative to the job root.
    public static let rejectedFolder = "_feedarchive/rejected"

    /// `<lake>/<job>`.
    public let jobRoot: String

    public init(root: String, job: String) {
        self.jobRoot = (root.hasSuffix("/") ? String(root.dropLast()) : root) + "/" + job
    }

    public var dataDirectory: String { jobRoot + "/data" }
    public var metaDirectory: String { jobRoot + "/_feedarchive" }
    public var identityFile: String { metaDirectory + "/job.json" }
    public var checkpointFile: String { metaDirectory + "/checkpoint.json" }
    public var manifestDirectory: String { metaDirectory + "/manifest" }
    public var lockFile: String { metaDirectory + "/lock" }
    public var lastRunFile: String { metaDirectory + "/last_run.json" }
    public var quarantineDirectory: String { metaDirectory + "/quarantine" }
    /// Temp files of blobs being written; recovery finds a killed run's here without walking
    /// `data/`.
    public var tempDirectory: String { metaDirectory + "/tmp" }
    /// `SEQ PATH`: the blob about to be renamed into place and the manifest line that will
    /// name it, so recovery finds a blob renamed by a run killed before its commit.
    public var placingFile: String { metaDirectory + "/placing" }
    /// Where the last clean verify got to (`VerifiedMark`).
    public var verifiedFile: String { metaDirectory + "/verified.json" }
    public var compactedFile: String { metaDirectory + "/compacted.json" }
    public var watermarkFile: String { metaDirectory + "/watermark.json" }
    public var retentionFile: String { metaDirectory + "/retention.json" }

    /// Path of a blob relative to the job root.
    public func blobRelativePath(
        partition: String, partitionPath: String?, bucket: Int64?, first: Position, last: Position,
        compression: Compression
    ) -> String {
        var path = "data"
        if let partitionPath, !partitionPath.isEmpty { path += "/" + partitionPath }
        if let bucket { path += "/" + TimeBucketer.folders(bucket) }
        return path + "/" + sanitizePathComponent(partition) + "_" + first.rawValue + "_" + last.rawValue
            + compression.fileExtension
    }

    public func absolute(_ relative: String) -> String { jobRoot + "/" + relative }
}

/// Makes a value from data safe as one path component: no `/`, no NUL, no `..`, no leading
/// dot, printable ASCII only; anything else becomes `_`.
public func sanitizePathComponent(_ value: String) -> String {
    var out = ""
    for scalar in value.unicodeScalars.prefix(128) {
        let allowed =
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "-_.=+@".unicodeScalars.contains(scalar))
        out.unicodeScalars.append(allowed ? scalar : "_")
    }
    while out.hasPrefix(".") { out = "_" + out.dropFirst() }
    return out.isEmpty ? "_" : out
}

/// Turns the job's partition path template into a relative path: `{value}` is replaced by the
/// change's sanitised path value; each literal segment is sanitised too.
public func renderPartitionPath(_ template: String?, value: String?) -> String? {
    guard let template, !template.isEmpty else { return nil }
    let segments = template.split(separator: "/", omittingEmptySubsequences: true).map { segment -> String in
        let replaced = segment.replacingOccurrences(of: "{value}", with: sanitizePathComponent(value ?? "_"))
        return sanitizePathComponent(replaced)
    }
    return segments.isEmpty ? nil : segments.joined(separator: "/")
}

/// Maps commit times to hour buckets (`date=`/`hour=` folders) in the job's time zone,
/// caching the zone's offset between transitions so the hot path does no calendar work.
public struct TimeBucketer: Sendable {
    private let zone: TimeZone
    private var offsetSeconds: Int64 = 0
    private var validFrom: Int64 = .max
    private var validUntil: Int64 = .min

    public init(timeZone: String) {
        self.zone = TimeZone(identifier: timeZone) ?? TimeZone(identifier: "UTC")!
    }

    /// Hours since the epoch in local time for `micros` (UTC microseconds).
    public mutating func bucket(_ micros: Int64) -> Int64 {
        let seconds = floorDivide(micros, 1_000_000).0
        if seconds < validFrom || seconds >= validUntil { refresh(seconds) }
        return floorDivide(seconds + offsetSeconds, 3600).0
    }

    private mutating func refresh(_ seconds: Int64) {
        let date = Date(timeIntervalSince1970: Double(seconds))
        offsetSeconds = Int64(zone.secondsFromGMT(for: date))
        validFrom = seconds
        if let next = zone.nextDaylightSavingTimeTransition(after: date) {
            validUntil = Int64(next.timeIntervalSince1970)
        } else {
            validUntil = .max
        }
    }

    /// `date=YYYY-MM-DD/hour=HH` for a bucket.
    public static func folders(_ bucket: Int64) -> String {
        let (days, hour) = floorDivide(bucket, 24)
        let (year, month, day) = civilFromDays(days)
        return "date=" + zeroPadded(UInt64(year), width: 4) + "-" + zeroPadded(UInt64(month), width: 2) + "-"
            + zeroPadded(UInt64(day), width: 2) + "/hour=" + zeroPadded(UInt64(hour), width: 2)
    }
}
