import FeedArchive
import FeedArchiveParquet
import FeedArchiveTesting
import Foundation
import Testing

/// Envelopes to Parquet and back: byte for byte through our reader, and read by pyarrow and
/// DuckDB (from the project's venv) with the types, statistics and values the envelope holds.
@Suite struct ParquetWriterTests {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The golden envelopes of every source (Tests/Corpus/golden).
    static func goldenLines() throws -> [[UInt8]] {
        var lines: [[UInt8]] = []
        for name in ["sqlite-envelopes.jsonl", "pgoutput-envelopes.txt", "cosmos-envelopes.txt"] {
            let text = try String(contentsOfFile: root + "/Tests/Corpus/golden/" + name, encoding: .utf8)
            for line in text.split(separator: "\n") {
                guard let brace = line.firstIndex(of: "{") else { continue }
                lines.append(Array(line[brace...].utf8))
            }
        }
        return lines
    }

    static func parquet(_ lines: [[UInt8]], rowGroupBytes: Int = 128 << 20) throws -> [UInt8] {
        var file: [UInt8] = []
        var writer = try EnvelopeParquetWriter(rowGroupBytes: rowGroupBytes) { file += $0 }
        for line in lines { try line.withUnsafeBufferPointer { try writer.append(line: $0) } }
        try writer.finish()
        return file
    }

    static func joined(_ lines: [[UInt8]]) -> [UInt8] { lines.flatMap { $0 + [0x0A] } }

    /// Runs `script` with the venv's Python, the file's path as its argument; its stdout.
    static func python(_ script: String, _ path: String) throws -> String {
        let python = root + "/.venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw PythonFailure(description: "\(python) missing: run scripts/bootstrap (scripts/test does)")
        }
        let out = NSTemporaryDirectory() + "/pyarrow-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        defer { try? FileManager.default.removeItem(atPath: out + ".err") }
        let pid = try spawn(python, ["-c", script, path], stdout: out, stderr: out + ".err")
        let status = reap(pid)
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard status == 0 else {
            let error = (try? String(contentsOfFile: out + ".err", encoding: .utf8)) ?? ""
            throw PythonFailure(description: "python exited \(status): \(text)\(error.suffix(2000))")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func goldenEnvelopesComeBackByteForByte() throws {
        let lines = try Self.goldenLines()
        #expect(lines.count > 50)
        for rowGroupBytes in [128 << 20, 2_000] {
            let file = try Self.parquet(lines, rowGroupBytes: rowGroupBytes)
            #expect(try EnvelopeParquet.envelopes(from: file) == Self.joined(lines))
        }
    }

    /// pyarrow reads the file: the types, each row's fields equal to the envelope's (JSON
    /// fields compared as parsed JSON), and statistics on pos and ts.
    @Test func pyarrowReadsWhatTheEnvelopeHolds() throws {
        let dir = TempDirectory()
        let lines = try Self.goldenLines()
        let path = dir.path + "/golden.parquet"
        try Data(Self.parquet(lines, rowGroupBytes: 3_000)).write(to: URL(fileURLWithPath: path))
        try Data(Self.joined(lines)).write(to: URL(fileURLWithPath: path + ".jsonl"))
        let result = try Self.python(
            """
            import sys, json, datetime, pyarrow.parquet as pq
            path = sys.argv[1]
            # Every page's CRC-32 checked by pyarrow as it reads.
            table = pq.read_table(path, page_checksum_verification=True)
            schema = table.schema
            assert str(schema.field('ts').type) == 'timestamp[us, tz=UTC]', schema.field('ts').type
            assert str(schema.field('pos').type) == 'string'
            assert str(schema.field('after').type) in ('string', 'extension<arrow.json>'), schema.field('after').type
            rows = table.to_pylist()
            envelopes = [json.loads(l) for l in open(path + '.jsonl')]
            assert len(rows) == len(envelopes), (len(rows), len(envelopes))
            for row, env in zip(rows, envelopes):
                for k in ('pos', 'part', 'op'):
                    assert row[k] == env[k], (k, row[k], env[k])
                for k in ('key', 'after', 'before', 'source'):
                    got = None if row[k] is None else json.loads(row[k])
                    assert got == env[k], (k, got, env[k])
                if env['ts'] is None:
                    assert row['ts'] is None
                else:
                    assert row['ts'].strftime('%Y-%m-%dT%H:%M:%S') == env['ts'][:19], (row['ts'], env['ts'])
            meta = pq.read_metadata(path)
            assert meta.num_row_groups > 1
            for g in range(meta.num_row_groups):
                cols = {meta.row_group(g).column(c).path_in_schema: meta.row_group(g).column(c) for c in range(8)}
                assert cols['pos'].statistics.has_min_max
                assert cols['pos'].statistics.min <= cols['pos'].statistics.max
            print(len(rows), meta.num_row_groups)
            """, path)
        #expect(result.hasPrefix("\(lines.count) "), "\(result)")
    }

    /// DuckDB counts the rows, reads the JSON columns as JSON and skips row groups on ts.
    @Test func duckdbQueriesTheFile() throws {
        let dir = TempDirectory()
        var lines: [[UInt8]] = []
        for index in 0..<20_000 {
            let ts = formatRFC3339(microseconds: 1_795_000_000_000_000 + Int64(index) * 1_000_000)
            lines.append(
                Array(
                    #"{"pos":"\#(String(format: "%020d", index))","part":"0","op":"\#(index % 3 == 0 ? "c" : "u")","ts":"\#(ts)","key":\#(index),"after":{"n":\#(index),"kind":"k\#(index % 5)"},"before":null,"source":{"table":"t"}}"#
                        .utf8))
        }
        let path = dir.path + "/orders.parquet"
        try Data(Self.parquet(lines, rowGroupBytes: 256 << 10)).write(to: URL(fileURLWithPath: path))
        #expect(
            try EnvelopeParquet.envelopes(from: try Array(Data(contentsOf: URL(fileURLWithPath: path))))
                == Self.joined(lines))
        let result = try Self.python(
            """
            import sys, duckdb
            p = sys.argv[1]
            c = duckdb.connect()
            total = c.sql(f"SELECT count(*), count(DISTINCT pos), sum((after->>'n')::BIGINT) FROM read_parquet('{p}')").fetchall()[0]
            creates = c.sql(f"SELECT count(*) FROM read_parquet('{p}') WHERE op = 'c'").fetchall()[0][0]
            types = c.sql(f"SELECT typeof(after), typeof(ts) FROM read_parquet('{p}') LIMIT 1").fetchall()[0]
            window = c.sql(f"SELECT count(*) FROM read_parquet('{p}') WHERE ts >= TIMESTAMPTZ '2026-11-18 11:10:00+00' AND ts < TIMESTAMPTZ '2026-11-18 11:20:00+00'").fetchall()[0][0]
            print(total, creates, types, window)
            """, path)
        #expect(result == "(20000, 20000, 199990000) 6667 ('JSON', 'TIMESTAMP WITH TIME ZONE') 600", "\(result)")
    }

    @Test func awkwardValuesComeBack() throws {
        let big = String(repeating: "x", count: 10 << 20)
        let lines: [String] = [
            #"{"pos":"1","part":"p \"q\" \\ é","op":"c","ts":"1969-07-20T20:17:40Z","key":"ü\u0001","after":{"t":"line\nbreak \u2028 𝄞"},"before":null,"source":null}"#,
            #"{"pos":"2","part":"0","op":"u","ts":"\#(formatRFC3339(microseconds: 9_300_000_000_000_000))","key":null,"after":null,"before":{"x":[1,2.5e300,-0.0]},"source":{}}"#,
            #"{"pos":"3","part":"0","op":"d","ts":null,"key":[],"after":"\#(big)","before":"NaN","source":{"f":"-Infinity"}}"#,
            #"{"pos":"4","part":"0","op":"t","ts":"\#(formatRFC3339(microseconds: -62_135_596_800_000_000 - 1))","key":"","after":"","before":{},"source":{"a":null}}"#,
        ]
        let bytes = lines.map { Array($0.utf8) }
        let file = try Self.parquet(bytes)
        #expect(try EnvelopeParquet.envelopes(from: file) == Self.joined(bytes))
        let dir = TempDirectory()
        let path = dir.path + "/awkward.parquet"
        try Data(file).write(to: URL(fileURLWithPath: path))
        let result = try Self.python(
            """
            import sys, pyarrow.parquet as pq
            table = pq.read_table(sys.argv[1])
            # Years outside Python's 1...9999 as integers: microseconds since 1970.
            ts = table.column('ts').cast('int64').to_pylist()
            t = table.drop_columns(['ts']).to_pydict()
            print(len(t['pos']), t['part'][0], len(t['after'][2]), t['after'][1], t['key'][1], ts[1], ts[2], ts[3])
            """, path)
        #expect(
            result == #"4 p "q" \ é \#((10 << 20) + 2) None None 9300000000000000 None -62135596800000001"#, "\(result)"
        )
    }

    @Test func damageIsReportedNotTrusted() throws {
        let file = try Self.parquet(try Self.goldenLines())
        var badMagic = file
        badMagic[0] = 0x51
        var truncated = Array(file.prefix(file.count - 20))
        truncated += Array("PAR1".utf8)
        var flipped = file
        // Inside the last page's compressed body (just before the footer).
        let footer = Int(file[file.count - 8]) | Int(file[file.count - 7]) << 8 | Int(file[file.count - 6]) << 16
        flipped[file.count - 8 - footer - 5] ^= 0xFF
        for (name, damaged) in [
            ("magic", badMagic), ("footer", truncated), ("short", Array(file.prefix(10))), ("page", flipped),
        ] {
            // (Not printing what came back: a blob's bytes.)
            #expect((try? EnvelopeParquet.envelopes(from: damaged)) == nil, "\(name) damage was not found")
        }
    }

    @Test func linesThatWouldNotComeBackAreRefused() throws {
        for line in [
            #"{"pos":"1","part":"0","op":"c","ts":"2026-01-01T00:00:00.000Z","key":null,"after":null,"before":null,"source":null}"#,
            #"{"pos":"1","part":"\u0030","op":"c","ts":null,"key":null,"after":null,"before":null,"source":null}"#,
            #"{"pos":"1","part":"0","op":"c","ts":null,"key":null,"after":null,"before":null}"#,
            #"{"pos":"1","part":"0","op":"c","ts":null,"key":null,"after":null,"before":null,"source":null} "#,
            // Whitespace around a value, as lines were written before documents were trimmed.
            #"{"pos":"1","part":"0","op":"c","ts":null,"key":null,"after": {"a":1},"before":null,"source":null}"#,
            #"{"pos":"1","part":"0","op":"c","ts":null,"key":7 ,"after":null,"before":null,"source":null}"#,
            #"{"pos":"1","part":"0","op":"c","ts":null,"key":null,"after":{"a":1}  ,"before":null,"source":null}"#,
        ] {
            var writer = try EnvelopeParquetWriter { _ in }
            #expect(throws: ParquetError.self, "\(line)") {
                try Array(line.utf8).withUnsafeBufferPointer { try writer.append(line: $0) }
            }
        }
    }

    /// Random envelopes: our reader gives the same bytes back, pyarrow the same values.
    @Test(arguments: [1, 2, 3])
    func randomEnvelopesRoundTrip(_ seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let alphabet = Array("aZ09 \"\\\n\t\u{1}é€𝄞{}[],:".unicodeScalars)
        func text(_ length: Int) -> String {
            String(String.UnicodeScalarView((0..<length).map { _ in alphabet.randomElement(using: &rng)! }))
        }
        func quoted(_ value: String) -> String {
            var out: [UInt8] = []
            JSONText.appendString(value, to: &out)
            return String(decoding: out, as: UTF8.self)
        }
        var lines: [[UInt8]] = []
        for index in 0..<500 {
            let ts =
                Bool.random(using: &rng)
                ? "null"
                : quoted(
                    formatRFC3339(
                        microseconds: Int64.random(in: -10_000_000_000_000_000...10_000_000_000_000_000, using: &rng)))
            let doc =
                Bool.random(using: &rng)
                ? "null"
                : #"{"s":\#(quoted(text(Int.random(in: 0...40, using: &rng)))),"n":\#(Int.random(in: -99...99, using: &rng))}"#
            lines.append(
                Array(
                    #"{"pos":"\#(String(format: "%08d", index))","part":\#(quoted(text(3))),"op":"\#(["c", "u", "d"].randomElement(using: &rng)!)","ts":\#(ts),"key":\#(quoted(text(5))),"after":\#(doc),"before":null,"source":{"i":\#(index)}}"#
                        .utf8))
        }
        let file = try Self.parquet(lines, rowGroupBytes: Int.random(in: 500...50_000, using: &rng))
        #expect(try EnvelopeParquet.envelopes(from: file) == Self.joined(lines))
        let dir = TempDirectory()
        let path = dir.path + "/random.parquet"
        try Data(file).write(to: URL(fileURLWithPath: path))
        try Data(Self.joined(lines)).write(to: URL(fileURLWithPath: path + ".jsonl"))
        let result = try Self.python(
            """
            import sys, json, pyarrow.parquet as pq
            rows = pq.read_table(sys.argv[1]).to_pylist()
            envs = [json.loads(l) for l in open(sys.argv[1] + '.jsonl')]
            assert len(rows) == len(envs)
            for r, e in zip(rows, envs):
                assert r['part'] == e['part'] and r['key'] == json.dumps(e['key'], ensure_ascii=False, separators=(',', ':')) or json.loads(r['key']) == e['key']
                assert (r['after'] is None) == (e['after'] is None)
                if e['after'] is not None: assert json.loads(r['after']) == e['after']
                assert (r['ts'] is None) == (e['ts'] is None)
            print(len(rows))
            """, path)
        #expect(result == "500")
    }
}

struct PythonFailure: Error, CustomStringConvertible {
    var description: String
}

/// A small deterministic generator (SplitMix64) so a failing seed can be run again.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
