import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// `archive.format: parquet` on a real SQLite feed: the binary writes Parquet blobs that DuckDB
/// reads with the hive folders as columns, `cat` prints what a JSON-lines job of the same feed
/// prints, and `verify --deep` is clean.
@Suite struct ParquetEndToEndTests {
    @Test func duckdbReadsTheParquetLakeAndCatMatchesJSONLines() async throws {
        let shop = ShopJob()
        try ShopFeed.create(shop.db, count: 3_000, rate: 0.5)
        let jobs = ["pq": "  format: parquet\n  columns:\n    event: string\n    order_id: string\n", "js": ""]
        for (name, format) in jobs {
            shop.dir.write(
                "\(name).yaml",
                """
                name: \(name)
                source:
                  kind: sqlite
                  path: shop.db
                  table: outbox
                  sequence_column: seq
                  document_column: payload
                  key_column: order_id
                  timestamp_column: created_at
                archive:
                  root: lake
                \(format)batch:
                  max_records: 400

                """)
            let run = try await Binary.run(["run", shop.dir.path + "/\(name).yaml"])
            #expect(run.status == 0, "\(run.stderr)")
        }
        let root = shop.dir.path + "/lake"
        let parquet = shop.files(under: root + "/pq/data").filter { $0.hasSuffix(".parquet") }
        #expect(parquet.count >= 8, "\(parquet)")
        let catParquet = try await Binary.run(["cat", shop.dir.path + "/pq.yaml"])
        let catLines = try await Binary.run(["cat", shop.dir.path + "/js.yaml"])
        #expect(catParquet.status == 0 && catParquet.stdout == catLines.stdout && catLines.stdout.count > 100_000)
        let verify = try await Binary.run(["verify", shop.dir.path + "/pq.yaml", "--deep", "--full"])
        #expect(verify.status == 0, "\(verify.stdout)")

        let duck = RunEndToEndTests()
        let counted = try duck.duckdb(
            "SELECT count(*), count(DISTINCT pos) FROM read_parquet('\(root)/pq/data/**/*.parquet', hive_partitioning = true)"
        )
        #expect(counted == "(3000, 3000)", "\(counted)")
        let hour = try duck.duckdb(
            """
            SELECT (SELECT count(*) FROM read_parquet('\(root)/pq/data/**/*.parquet', hive_partitioning = true) WHERE hour = 12 AND op = 'c'),
                   (SELECT count(*) FROM read_json('\(root)/js/data/**/*.jsonl.zst', hive_partitioning = true) WHERE hour = 12 AND op = 'c')
            """)
        let counts = hour.trimmingCharacters(in: CharacterSet(charactersIn: "()")).split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        #expect(counts.count == 2 && counts[0] == counts[1] && counts[0] != "0", "\(hour)")
        let json = try duck.duckdb(
            "SELECT count(*) FROM read_parquet('\(root)/pq/data/**/*.parquet') WHERE after->>'event' = 'order_placed'")
        #expect(json == "(500,)", "\(json)")
        // The promoted column, typed, beside the whole document.
        let promoted = try duck.duckdb(
            "SELECT count(*), count(DISTINCT order_id) > 100 FROM read_parquet('\(root)/pq/data/**/*.parquet') WHERE event = 'order_placed' AND order_id = after->>'order_id'"
        )
        #expect(promoted == "(500, True)", "\(promoted)")

        // The JSON-lines job's closed buckets turned into Parquet: the same changes.
        let convert = try await Binary.run([
            "compact", shop.dir.path + "/js.yaml", "--after", "0s", "--format", "parquet",
        ])
        #expect(convert.status == 0, "\(convert.stderr)")
        let converted = shop.files(under: root + "/js/data").filter { $0.hasSuffix(".parquet") }
        #expect(!converted.isEmpty)
        let again = try await Binary.run(["cat", shop.dir.path + "/js.yaml"])
        #expect(again.stdout == catLines.stdout)
        #expect(try await Binary.run(["verify", shop.dir.path + "/js.yaml", "--deep", "--full"]).status == 0)
        let both = try duck.duckdb(
            """
            SELECT (SELECT count(*) FROM read_parquet('\(root)/js/data/**/*.parquet'))
                 + (SELECT count(*) FROM read_json('\(root)/js/data/**/*.jsonl.zst'))
            """)
        #expect(both == "(3000,)", "\(both)")
    }
}
