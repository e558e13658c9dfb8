import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@Suite struct CodecTests {
    static let sample: [UInt8] = {
        var bytes: [UInt8] = []
        for index in 0..<20_000 { bytes += Array(#"{"pos":"\#(index)","doc":"hello world \#(index % 97)"}"#.utf8) + [0x0A] }
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
