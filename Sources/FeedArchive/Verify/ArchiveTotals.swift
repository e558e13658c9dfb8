import Foundation

/// Totals over the manifest's blob lines.
public struct ArchiveTotals: Codable, Equatable, Sendable {
    public var blobs = 0
    public var records: Int64 = 0
    public var bytes: Int64 = 0
    public var rawBytes: Int64 = 0
    /// Changes the job's transform filters left out, over every blob line written (kept in
    /// checkpoint.json only when there are some).
    public var filtered: Int64 = 0
    /// Changes the transform could not take (in the dead letters), over every blob line.
    public var rejected: Int64 = 0

    enum CodingKeys: String, CodingKey {
        case blobs, records, bytes
        case rawBytes = "raw_bytes"
        case filtered, rejected
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        blobs = try container.decode(Int.self, forKey: .blobs)
        records = try container.decode(Int64.self, forKey: .records)
        bytes = try container.decode(Int64.self, forKey: .bytes)
        rawBytes = try container.decode(Int64.self, forKey: .rawBytes)
        filtered = try container.decodeIfPresent(Int64.self, forKey: .filtered) ?? 0
        rejected = try container.decodeIfPresent(Int64.self, forKey: .rejected) ?? 0
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(blobs, forKey: .blobs)
        try container.encode(records, forKey: .records)
        try container.encode(bytes, forKey: .bytes)
        try container.encode(rawBytes, forKey: .rawBytes)
        if filtered > 0 { try container.encode(filtered, forKey: .filtered) }
        if rejected > 0 { try container.encode(rejected, forKey: .rejected) }
    }

    public init(_ manifest: Manifest) {
        for entry in manifest.entries { add(entry) }
    }

    /// Counts one more manifest line (only blob lines count; a `compact` line replaces the
    /// blobs it names with one of the same records; a `prune` line takes away what it names).
    public mutating func add(_ entry: ManifestEntry) {
        if entry.kind == .compact {
            blobs += 1 - (entry.replaces?.count ?? 0)
            bytes += (entry.bytes ?? 0) - (entry.replacedBytes ?? 0)
            // Duplicates a folded compaction removed.
            records += (entry.records ?? 0) - (entry.replacedRecords ?? entry.records ?? 0)
            rawBytes += (entry.rawBytes ?? 0) - (entry.replacedRawBytes ?? entry.rawBytes ?? 0)
            return
        }
        if entry.kind == .prune {
            blobs -= entry.replaces?.count ?? 0
            records -= entry.records ?? 0
            bytes -= entry.replacedBytes ?? 0
            rawBytes -= entry.rawBytes ?? 0
            return
        }
        guard entry.kind == .blob else { return }
        blobs += 1
        filtered += entry.filtered?.values.reduce(0, +) ?? 0
        rejected += entry.rejected ?? 0
        records += entry.records ?? 0
        bytes += entry.bytes ?? 0
        rawBytes += entry.rawBytes ?? 0
    }

    /// Uncompressed over compressed.
    public var ratio: Double { bytes > 0 ? Double(rawBytes) / Double(bytes) : 0 }
}
