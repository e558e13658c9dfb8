import FeedArchive
import FeedArchiveParquet
import FeedArchiveTesting
import Foundation
import Testing

/// `archive.format: parquet`: runs write Parquet blobs; verify (fast and deep), cat,
/// compaction and retention read them as they read JSON lines, record for record.
@Suite struct ParquetArchiveTests {
    init() { BlobFormats.register(parquet: ParquetBlobFormat(rowGroupBytes: 4_096)) }

    static func job(_ dir: TempDirectory, format: String, name: String = "mem") throws -> JobConfig {
        try JobConfig.parse(
            yaml: """
                name: \(name)
                source:
                  kind: memory
                archive:
                  root: \(dir.path)/lake
                  format: \(format)
                batch:
                  max_records: 40
                  page_size: 7

                """, file: dir.path + "/\(name).yaml")
    }

    static func cat(_ job: JobConfig) throws -> [UInt8] {
        var out: [UInt8] = []
        try ArchiveReader(job: job).read(from: nil, until: nil) { out += $0 }
        return out
    }

    @Test func aParquetArchiveHoldsWhatAJSONLinesOneHolds() async throws {
        let dir = TempDirectory()
        let parquet = try Self.job(dir, format: "parquet")
        let jsonl = try Self.job(dir, format: "jsonl", name: "twin")
        let source = InMemorySource()
        let start: Int64 = 1_795_000_000_000_000 - 400_000_000
        for index in 0..<300 { source.append(timestamp: start + Int64(index) * 60_000_000) }
        var options = RunOptions()
        options.maxRecords = 50
        for _ in 0..<7 {
            _ = try await ArchiveRunner(job: parquet, source: source).run(options)
            _ = try await ArchiveRunner(job: jsonl, source: source).run(options)
        }
        let blobs = try JobArchive(job: parquet).store.read().0.entries.filter(\.namesBlob)
        #expect(!blobs.isEmpty && blobs.allSatisfy { $0.path!.hasSuffix(".parquet") })
        #expect(try Self.cat(parquet) == Self.cat(jsonl))
        #expect(try Self.cat(parquet).count > 10_000)
        for full in [true, false] {
            let report = try Verifier(job: parquet).verify(deep: true, full: full)
            #expect(report.isClean && report.records == 300, "\(report.problems)")
        }
        // Compaction and retention work on Parquet blobs too.
        let compacted = try Compactor(job: parquet).compact(after: 0)
        #expect(!compacted.blobs.isEmpty)
        #expect(try Self.cat(parquet) == Self.cat(jsonl))
        #expect(try Verifier(job: parquet).verify(deep: true, full: true).isClean)
        let pruned = try Pruner(job: parquet).prune(before: start + 2 * 3_600_000_000, after: 0, dryRun: false)
        #expect(!pruned.blobs.isEmpty)
        #expect(try Verifier(job: parquet).verify(deep: true, full: true).isClean)
    }

    /// A damaged Parquet blob: verify names it (deep: the page checksum; fast: its SHA-256).
    @Test func aDamagedParquetBlobIsNamed() async throws {
        let dir = TempDirectory()
        let job = try Self.job(dir, format: "parquet")
        let source = InMemorySource()
        for index in 0..<100 { source.append(timestamp: 1_795_000_000_000_000 + Int64(index) * 1_000_000) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let blob = try #require(try JobArchive(job: job).store.read().0.entries.first(where: \.namesBlob)?.path)
        let path = job.archive.root + "/mem/" + blob
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count / 2] ^= 0x55
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        for deep in [false, true] {
            let report = try Verifier(job: job).verify(deep: deep, full: true)
            // Fast: the SHA-256 differs; deep: the page fails its checksum as it is decoded.
            let kind = deep ? "decode" : "hash"
            #expect(report.problems.contains { $0.path == blob && $0.kind == kind }, "\(report.problems)")
        }
    }

    @Test func formatSettingsAreChecked() throws {
        let dir = TempDirectory()
        #expect(try Self.job(dir, format: "parquet").archive.compression == .parquet)
        #expect(throws: FeedArchiveError.self) { try Self.job(dir, format: "avro") }
        #expect(throws: FeedArchiveError.self) {
            try JobConfig.parse(
                yaml:
                    "name: x\nsource:\n  kind: memory\narchive:\n  root: /tmp/x\n  format: parquet\n  compression: lz4\n",
                file: dir.path + "/x.yaml")
        }
    }
}

/// `compact --format parquet`: closed buckets of a JSON-lines archive become Parquet blobs (one
/// blob per bucket, a bucket of a single blob too); cat and verify see the same changes.
@Suite struct ParquetConversionTests {
    init() { BlobFormats.register(parquet: ParquetBlobFormat()) }

    @Test func closedBucketsOfJSONLinesBecomeParquet() async throws {
        let dir = TempDirectory()
        let job = try ParquetArchiveTests.job(dir, format: "jsonl")
        let source = InMemorySource()
        let start: Int64 = 1_795_000_000_000_000 - 400_000_000
        for index in 0..<240 { source.append(timestamp: start + Int64(index) * 60_000_000) }  // 4 hours
        var options = RunOptions()
        options.maxRecords = 30
        for _ in 0..<9 { _ = try await ArchiveRunner(job: job, source: source).run(options) }
        let before = try ParquetArchiveTests.cat(job)
        _ = try Compactor(job: job).compact(after: 0)  // a plain compaction first: its mark is passed over

        let report = try Compactor(job: job).compact(after: 0, format: .parquet)
        #expect(report.blobs.count == 3, "\(report.blobs.map(\.folder)) \(report.skipped) \(report.watermark ?? "-")")
        let live = try JobArchive(job: job).store.read().0.currentLines().filter(\.namesBlob).map { $0.path! }
        #expect(live.filter { $0.hasSuffix(".parquet") }.count == 3)
        #expect(live.filter { $0.contains("hour=14") }.allSatisfy { $0.hasSuffix(".jsonl.zst") })  // still open
        #expect(try ParquetArchiveTests.cat(job) == before)
        for full in [true, false] {
            let check = try Verifier(job: job).verify(deep: true, full: full)
            #expect(check.isClean && check.records == 240, "\(check.problems)")
        }
        // Nothing left to convert; runs go on writing JSON lines.
        #expect(try Compactor(job: job).compact(after: 0, format: .parquet).blobs.isEmpty)
    }
}

/// `archive.columns`: top-level fields of `after` as typed columns beside the whole document;
/// a missing field or one of another type is null, and nothing is lost.
@Suite struct PromotedColumnTests {
    init() { BlobFormats.register(parquet: ParquetBlobFormat()) }

    @Test func fieldsOfAfterBecomeTypedColumnsAndStayInAfter() throws {
        let lines: [[UInt8]] = [
            #"{"pos":"1","part":"0","op":"c","ts":"2026-11-18T11:00:00Z","key":1,"after":{"id":"a","total":12.5,"qty":3,"paid":true,"at":"2026-11-18T10:59:00Z"},"before":null,"source":{}}"#,
            #"{"pos":"2","part":"0","op":"u","ts":"2026-11-18T11:00:01Z","key":2,"after":{ "qty" : "three", "total" : 7, "id" : "b\u00e9\"" , "nested":{"qty":9}},"before":null,"source":{}}"#,
            #"{"pos":"3","part":"0","op":"d","ts":null,"key":3,"after":null,"before":{"id":"c"},"source":{}}"#,
            #"{"pos":"4","part":"0","op":"c","ts":null,"key":4,"after":"not an object","before":null,"source":{}}"#,
        ].map { Array($0.utf8) }
        let promoted = EnvelopeParquet.promoted("id:string,total:double,qty:int64,paid:bool,at:timestamp")
        #expect(promoted.count == 5)
        var file: [UInt8] = []
        var writer = try EnvelopeParquetWriter(promoted: promoted) { file += $0 }
        for line in lines { try line.withUnsafeBufferPointer { try writer.append(line: $0) } }
        try writer.finish()
        #expect(try EnvelopeParquet.envelopes(from: file) == ParquetWriterTests.joined(lines))
        let dir = TempDirectory()
        let path = dir.path + "/promoted.parquet"
        try Data(file).write(to: URL(fileURLWithPath: path))
        let result = try ParquetWriterTests.python(
            """
            import sys, pyarrow.parquet as pq
            t = pq.read_table(sys.argv[1])
            types = ','.join(str(t.schema.field(n).type) for n in ['id', 'total', 'qty', 'paid', 'at'])
            d = t.drop_columns(['ts', 'at']).to_pydict()
            at = t.column('at').cast('int64').to_pylist()
            m = pq.read_metadata(sys.argv[1]).row_group(0)
            stats = m.column(9).statistics
            print(types, d['id'], d['total'], d['qty'], d['paid'], at, stats.min, stats.max)
            """, path)
        #expect(
            result
                == #"string,double,int64,bool,timestamp[us, tz=UTC] ['a', 'bé"', None, None] [12.5, 7.0, None, None] [3, None, None, None] [True, None, None, None] [1794999540000000, None, None, None] 7.0 12.5"#,
            "\(result)")
    }

    @Test func columnsNeedParquetAndKnownTypes() throws {
        let dir = TempDirectory()
        func job(_ archive: String) throws -> JobConfig {
            try JobConfig.parse(
                yaml: "name: x\nsource:\n  kind: memory\narchive:\n  root: /tmp/x\n\(archive)",
                file: dir.path + "/x.yaml")
        }
        let good = try job("  format: parquet\n  columns:\n    total: double\n    id: string\n")
        #expect(good.archive.formatOptions == "total:double,id:string")
        #expect(good.archive.shape["archive.columns"] == "total:double,id:string")
        #expect(try job("  format: parquet\n").archive.shape["archive.columns"] == nil)
        for bad in [
            "  columns:\n    total: double\n", "  format: parquet\n  columns:\n    total: decimal\n",
            "  format: parquet\n  columns:\n    after: string\n", "  format: parquet\n  columns:\n    'a,b': string\n",
        ] {
            #expect(throws: FeedArchiveError.self, "\(bad)") { try job(bad) }
        }
    }
}

/// `archive.row_group_size`: a blob larger than it holds several row groups.
@Suite struct RowGroupSizeTests {
    init() { BlobFormats.register(parquet: ParquetBlobFormat()) }

    @Test func aBlobHasRowGroupsOfTheSizeSet() async throws {
        let dir = TempDirectory()
        let job = try JobConfig.parse(
            yaml: """
                name: mem
                source:
                  kind: memory
                archive:
                  root: \(dir.path)/lake
                  format: parquet
                  row_group_size: 1MiB
                batch:
                  max_records: 50000
                  page_size: 1000

                """, file: dir.path + "/mem.yaml")
        #expect(job.archive.formatOptions == "row_group=1048576;")
        let source = InMemorySource()
        for index in 0..<30_000 { source.append(timestamp: 1_795_000_000_000_000 + Int64(index) * 1_000) }
        _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
        let blob = try #require(try JobArchive(job: job).store.read().0.entries.first(where: \.namesBlob))
        #expect((blob.rawBytes ?? 0) > 2 << 20, "\(blob.rawBytes ?? 0) bytes of envelopes")
        let groups = try ParquetWriterTests.python(
            "import sys, pyarrow.parquet as pq; print(pq.read_metadata(sys.argv[1]).num_row_groups)",
            job.archive.root + "/mem/" + blob.path!)
        #expect(Int(groups).map { $0 >= 2 } == true, "\(groups) row groups")
        #expect(try Verifier(job: job).verify(deep: true, full: true).isClean)
        #expect(throws: FeedArchiveError.self) {
            try JobConfig.parse(
                yaml: "name: x\nsource:\n  kind: memory\narchive:\n  root: /tmp/x\n  row_group_size: 1MiB\n",
                file: dir.path + "/x.yaml")
        }
    }
}
