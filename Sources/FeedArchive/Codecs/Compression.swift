/// How blobs are compressed; each is one frame with a content checksum, readable by stock tools.
public enum Compression: String, Sendable, CaseIterable, Codable {
    case zstd
    case lz4
    case none

    /// The blob file name suffix.
    public var fileExtension: String {
        switch self {
        case .zstd: ".jsonl.zst"
        case .lz4: ".jsonl.lz4"
        case .none: ".jsonl"
        }
    }

    /// The compression a blob's file name says it has.
    public static func of(path: String) -> Compression? {
        if path.hasSuffix(".jsonl.zst") { return .zstd }
        if path.hasSuffix(".jsonl.lz4") { return .lz4 }
        if path.hasSuffix(".jsonl") { return Compression.none }
        return nil
    }

    /// A streaming encoder for this codec.
    public func makeEncoder(level: Int, workers: Int) throws -> any BlobEncoder {
        switch self {
        case .zstd: try ZstdEncoder(level: level, workers: workers)
        case .lz4: try LZ4Encoder(level: level)
        case .none: PassthroughCodec()
        }
    }

    /// A streaming decoder for this codec.
    public func makeDecoder() throws -> any BlobDecoder {
        switch self {
        case .zstd: try ZstdDecoder()
        case .lz4: try LZ4Decoder()
        case .none: PassthroughCodec()
        }
    }
}

/// Receives encoder or decoder output.
public typealias ByteSink = (UnsafeRawBufferPointer) throws -> Void

/// Compresses a stream into one frame, handing finished output to a sink as it goes.
public protocol BlobEncoder: AnyObject {
    /// Feeds uncompressed bytes.
    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws
    /// Ends the frame (with its checksum) and flushes everything to the sink.
    func finish(to sink: ByteSink) throws
}

/// Decompresses one frame in chunks; `finish` fails if the frame was cut short.
public protocol BlobDecoder: AnyObject {
    /// Feeds compressed bytes; decoded bytes go to the sink.
    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws
    /// Confirms the frame ended completely (checksum verified by the codec).
    func finish() throws
}

/// Why a blob could not be decoded: corrupt, truncated, or trailing data.
public struct CodecError: Error, CustomStringConvertible, Sendable {
    /// What the codec said.
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `compression: none`: bytes pass through unchanged.
final class PassthroughCodec: BlobEncoder, BlobDecoder {
    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws {
        if input.count > 0 { try sink(input) }
    }
    func finish(to sink: ByteSink) throws {}
    func finish() throws {}
}

extension BlobDecoder {
    /// Decodes a whole in-memory frame (tests and small blobs).
    public func decodeAll(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        try bytes.withUnsafeBytes { try write($0) { out.append(contentsOf: $0) } }
        try finish()
        return out
    }
}

extension BlobEncoder {
    /// Encodes a whole buffer into one frame (tests and small blobs).
    public func encodeAll(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        try bytes.withUnsafeBytes { try write($0) { out.append(contentsOf: $0) } }
        try finish { out.append(contentsOf: $0) }
        return out
    }
}
