import FeedArchive
import Foundation

/// A deterministic PRNG (SplitMix64), so a failing fuzz input or writer script can be
/// reproduced from its seed.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Every envelope line of a job's blobs, in manifest order (all lineages; a compacted blob in
/// the place of the blobs it replaced).
public func archivedLines(_ job: JobConfig) throws -> [String] {
    let archive = JobArchive(job: job)
    _ = try archive.load()
    var lines: [String] = []
    for entry in archive.manifest.currentLines() where entry.namesBlob {
        guard let path = entry.path, let compression = Compression.of(path: path),
            let bytes = try PosixFileSystem().read(archive.layout.absolute(path))
        else { throw FeedArchiveError.data(path: entry.path, message: "blob of manifest seq \(entry.seq) is missing") }
        let decoded = try compression.makeDecoder().decodeAll(bytes)
        lines += String(decoding: decoded, as: UTF8.self).split(separator: "\n").map(String.init)
    }
    return lines
}
