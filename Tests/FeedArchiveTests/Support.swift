import FeedArchive
import FeedArchiveTesting
import Foundation

/// A job over the in-memory source, archived under `dir/lake`.
func memoryJob(
    in dir: TempDirectory, maxRecords: Int = 10, compression: String = "zstd", partitionPath: String? = nil,
    extra: String = ""
) throws -> JobConfig {
    var yaml = """
        name: mem
        source:
          kind: memory
        archive:
          root: \(dir.path)/lake
          compression: \(compression)

        """
    if let partitionPath { yaml += "  partition_path: \"\(partitionPath)\"\n" }
    yaml += extra
    yaml += """
        batch:
          max_records: \(maxRecords)
          page_size: 4

        """
    return try JobConfig.parse(yaml: yaml, file: dir.path + "/mem.yaml")
}

/// Every envelope line of the live blobs, in manifest order.
func archivedLines(_ job: JobConfig) throws -> [String] {
    let archive = JobArchive(job: job)
    _ = try archive.load()
    var lines: [String] = []
    for entry in archive.manifest.entries where entry.kind == .blob {
        let bytes = try #require(try PosixFileSystem().read(archive.layout.absolute(entry.path!)))
        let decoded = try Compression.of(path: entry.path!)!.makeDecoder().decodeAll(bytes)
        lines += String(decoding: decoded, as: UTF8.self).split(separator: "\n").map(String.init)
    }
    return lines
}

/// The `pos` of an envelope line.
func position(of line: String) -> String {
    let start = line.range(of: #""pos":""#)!.upperBound
    return String(line[start...].prefix { $0 != "\"" })
}

let hour: Int64 = 3_600_000_000
let baseTime: Int64 = 1_795_000_000_000_000  // 2026-11-18T11:06:40Z

import Testing
