import Foundation

/// Totals over the manifest's blob lines.
public struct ArchiveTotals: Sendable {
    public var blobs = 0
    public var records: Int64 = 0
    public var bytes: Int64 = 0
    public var rawBytes: Int64 = 0

    public init(_ manifest: Manifest) {
        for entry in manifest.entries where entry.kind == .blob {
            blobs += 1
            records += entry.records ?? 0
            bytes += entry.bytes ?? 0
            rawBytes += entry.rawBytes ?? 0
        }
    }

    /// Uncompressed over compressed.
    public var ratio: Double { bytes > 0 ? Double(rawBytes) / Double(bytes) : 0 }
}
