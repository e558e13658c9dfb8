import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@Suite struct CodecTests {
    static let sample: [UInt8] = {
        var bytes: [UInt8] = []
        for index in 0..<20_000 {
            bytes += Array(#"{"pos":"\#(index)","doc":"hello world \#(index % 97)"}"#.utf8) + [0x0A]
        }
        return bytes
    }()

    @Test(arguments: [Compression.zstd, .lz4, .none])
    func roundTrip(_ compression: Compression) throws {
        for input in [[], [0x41], Self.sample] as [[UInt8]] {
            let encoded = try compression.makeEncoder(level: compression == .lz4 ? 0 : 3, workers: 0).encodeAll(input)
            let decoded = try compression.makeDecoder().decodeAll(encoded)
            #expect(decoded == input)
        }
    }

    @Test func zstdWithWorkersRoundTrips() throws {
        let encoded = try Compression.zstd.makeEncoder(level: 3, workers: 2).encodeAll(Self.sample)
        #expect(try Compression.zstd.makeDecoder().decodeAll(encoded) == Self.sample)
        #expect(encoded.count < Self.sample.count / 4)
    }

    /// A blob's bytes depend on the job's settings and the lines, not on how the writer
    /// buffered them (64 KiB without a worker, 1 MiB with) nor on how many workers there are
    /// (one or more): a backfill on another machine re-creates a lost blob byte for byte. No
    /// worker and some workers are two settings, with two frames.
    @Test func blobBytesDependOnlyOnTheSettings() throws {
        let dir = TempDirectory("feedarchive-codec")
        var lines: [ArraySlice<UInt8>] = []
        for index in 0..<120_000 {  // ~7 MiB: several 2 MiB worker jobs
            lines.append(
                ArraySlice(#"{"pos":"\#(index)","doc":"hello world \#(index % 997) \#(index * 7919 % 10007)"}"#.utf8))
        }
        var content: [UInt8] = []
        for line in lines { content += line + [0x0A] }
        #expect(content.count > 4 << 20)  // a worker's frame differs only past one 2 MiB job
        func blob(workers: Int, bufferLimit: Int?) throws -> [UInt8] {
            let path = dir.path + "/\(workers)-\(bufferLimit ?? 0).tmp"
            let writer = try BlobWriter(
                fs: PosixFileSystem(), tempPath: path, compression: .zstd, level: 3, workers: workers, mode: 0o600,
                bufferLimit: bufferLimit)
            for line in lines { try writer.append(line: line) }
            let result = try writer.finish()
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(result.bytes == Int64(bytes.count) && result.rawBytes == Int64(content.count))
            return bytes
        }
        let single = try Compression.zstd.makeEncoder(level: 3, workers: 0).encodeAll(content)
        #expect(try blob(workers: 0, bufferLimit: nil) == single)
        #expect(try blob(workers: 0, bufferLimit: 1 << 20) == single)
        #expect(try blob(workers: 0, bufferLimit: 4096) == single)
        let threaded = try blob(workers: 1, bufferLimit: nil)
        #expect(threaded != single)
        #expect(try blob(workers: 2, bufferLimit: nil) == threaded)
        #expect(try blob(workers: 1, bufferLimit: 64 << 10) == threaded)
        #expect(try Compression.zstd.makeDecoder().decodeAll(threaded) == content)
    }

    @Test(arguments: [Compression.zstd, .lz4])
    func corruptFrameIsRejected(_ compression: Compression) throws {
        var encoded = try compression.makeEncoder(level: 1, workers: 0).encodeAll(Self.sample)
        encoded[encoded.count / 2] ^= 0x5A
        #expect(throws: CodecError.self) { try compression.makeDecoder().decodeAll(encoded) }
    }

    @Test(arguments: [Compression.zstd, .lz4])
    func truncatedFrameIsRejected(_ compression: Compression) throws {
        let encoded = try compression.makeEncoder(level: 1, workers: 0).encodeAll(Self.sample)
        for cut in [encoded.count - 1, encoded.count - 4, encoded.count / 2, 3] {
            #expect(throws: CodecError.self) { try compression.makeDecoder().decodeAll(Array(encoded[0..<cut])) }
        }
        #expect(throws: CodecError.self) { try compression.makeDecoder().decodeAll([]) }
    }

    @Test(arguments: [Compression.zstd, .lz4])
    func trailingDataIsRejected(_ compression: Compression) throws {
        let encoded = try compression.makeEncoder(level: 1, workers: 0).encodeAll(Self.sample)
        #expect(throws: CodecError.self) { try compression.makeDecoder().decodeAll(encoded + encoded) }
    }

    /// The stock tools accept what we write: `zstd -t`, `lz4 -t`, and decompress to the input.
    @Test(arguments: [("zstd", Compression.zstd), ("lz4", Compression.lz4)])
    func stockToolReadsOurFrames(_ tool: String, _ compression: Compression) throws {
        let dir = TempDirectory()
        let file = dir.path + "/blob" + compression.fileExtension
        let encoded = try compression.makeEncoder(level: 3, workers: 1).encodeAll(Self.sample)
        _ = FileManager.default.createFile(atPath: file, contents: Data(encoded))
        #expect(try runTool(tool, ["-t", "-q", file]).status == 0)
        let out = try runTool(tool, ["-d", "-c", "-q", file])
        #expect(out.status == 0)
        #expect(Array(out.stdout) == Self.sample)
    }
}

func runTool(_ tool: String, _ arguments: [String]) throws -> (status: Int32, stdout: Data) {
    let out = NSTemporaryDirectory() + "/tool-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: out) }
    let status = reap(try spawn(tool, arguments, stdout: out))
    return (status, try Data(contentsOf: URL(fileURLWithPath: out)))
}
