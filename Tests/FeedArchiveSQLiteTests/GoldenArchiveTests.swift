import CSQLite
import FeedArchive
import FeedArchiveSQLite
import FeedArchiveTesting
import Foundation
import Testing

/// A fixed SQLite feed archived through the whole pipeline (source, envelope, batching, codecs,
/// commit protocol) gives the recorded blobs, envelopes, tokens and manifest lines, byte for
/// byte: a refactoring must not change what lands on disk.
@Suite struct GoldenArchiveTests {
    /// Rows that walk every branch of the SQLite envelope: ops by name and letter, an unknown op,
    /// text and integer and null keys, a document that is not JSON, a null document, escapes and
    /// non-ASCII text, integer and text times, three hour buckets, two partition values.
    static func makeFeed(_ path: String, rows: ClosedRange<Int>) throws {
        let writer = try OutboxWriter(
            path: path,
            schema:
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, k, at, op TEXT, region TEXT, doc TEXT)"
        )
        let ops = ["insert", "u", "delete", "c", "UPDATE", "bogus", "t", "r", "w", "create"]
        try writer.exec("BEGIN")
        for n in rows {
            let key = n % 3 == 0 ? "\(n)" : n % 3 == 1 ? "'order-\(n)'" : "NULL"
            let at =
                n % 4 == 0
                ? "\(1_795_000_000 + n * 97)"
                : "'\(formatRFC3339(microseconds: Int64(1_795_000_000 + n * 97) * 1_000_000))'"
            let doc: String
            switch n % 7 {
            case 0: doc = "NULL"
            case 1: doc = "'not json: \\\"tab\\t\" ü'"
            case 2: doc = "'{\"n\":\(n),\"text\":\"caf\u{e9} \\\"q\\\" \\u0001\",\"list\":[1,2.5,true,null]}'"
            default: doc = "'{ \"n\" : \(n) , \"nested\" : { \"a\" : [ ] } }'"
            }
            let region = n % 5 == 0 ? "'eu/west'" : "'us'"
            try writer.exec(
                "INSERT INTO outbox(k, at, op, region, doc) VALUES (\(key), \(at), '\(ops[n % ops.count])', \(region), \(doc))"
            )
        }
        try writer.exec("COMMIT")
    }

    static func job(_ dir: TempDirectory, name: String, compression: String) throws -> JobConfig {
        let yaml = """
            name: \(name)
            source:
              kind: sqlite
              path: feed.db
              table: outbox
              sequence_column: seq
              document_column: doc
              key_column: k
              timestamp_column: at
              op_column: op
              partition_column: region
            archive:
              root: lake
              compression: \(compression)
              partition_path: region={value}
            batch:
              max_records: 9
              page_size: 4
            start: beginning
            """
        return try JobConfig.parse(yaml: yaml, file: dir.path + "/\(name).yaml")
    }

    @Test(arguments: ["zstd", "lz4", "none"])
    func aFixedFeedArchivesToTheRecordedBytes(compression: String) async throws {
        let dir = TempDirectory("golden-sqlite")
        try Self.makeFeed(dir.path + "/feed.db", rows: 1...40)
        let job = try Self.job(dir, name: "golden", compression: compression)
        _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())
        try Self.makeFeed(dir.path + "/feed.db", rows: 41...60)
        _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions(maxRecords: 10))
        _ = try await ArchiveRunner(job: job, source: try SQLiteSource.make(job: job)).run(RunOptions())

        let manifest = try GoldenFile.normalizedManifest(job)
        let manifestMismatch = try GoldenFile.mismatch(manifest, name: "sqlite-\(compression)-manifest.jsonl")
        #expect(manifestMismatch == nil, "\(manifestMismatch ?? "")")
        let lines = try archivedLines(job).joined(separator: "\n") + "\n"
        let linesMismatch = try GoldenFile.mismatch(lines, name: "sqlite-envelopes.jsonl")
        #expect(linesMismatch == nil, "\(linesMismatch ?? "")")
        #expect(manifest.contains("\"kind\":\"blob\"") && lines.split(separator: "\n").count == 60)
    }
}
