import Foundation
import Synchronization

/// How blobs are encoded: JSON lines in one compressed frame with a content checksum (zstd,
/// lz4, none), readable by stock tools, or a Parquet file (`archive.format: parquet`, zstd
/// pages), which lake engines read; the Parquet codec comes from the `FeedArchiveParquet`
/// module, registered with `BlobFormats.register(parquet:)`.
public enum Compression: String, Sendable, CaseIterable, Codable {
    case zstd
    case lz4
    case none
    case parquet

    /// The blob file name suffix.
    public var fileExtension: String {
        switch self {
        case .zstd: ".jsonl.zst"
        case .lz4: ".jsonl.lz4"
        case .none: ".jsonl"
        case .parquet: ".parquet"
        }
    }

    /// The compression a blob's file name says it has.
    public static func of(path: String) -> Compression? {
        if path.hasSuffix(".jsonl.zst") { return .zstd }
        if path.hasSuffix(".jsonl.lz4") { return .lz4 }
        if path.hasSuffix(".jsonl") { return Compression.none }
        if path.hasSuffix(".parquet") { return .parquet }
        return nil
    }

    /// A streaming encoder for this codec. `options`: what the format needs beyond the codec
    /// (Parquet's promoted columns, `ArchiveSettings.formatOptions`).
    public func makeEncoder(level: Int, workers: Int, options: String = "") throws -> any BlobEncoder {
        switch self {
        case .zstd: try ZstdEncoder(level: level, workers: workers)
        case .lz4: try LZ4Encoder(level: level)
        case .none: PassthroughCodec()
        case .parquet: try BlobFormats.parquetProvider().makeEncoder(level: level, options: options)
        }
    }

    /// A streaming decoder for this codec.
    public func makeDecoder() throws -> any BlobDecoder {
        switch self {
        case .zstd: try ZstdDecoder()
        case .lz4: try LZ4Decoder()
        case .none: PassthroughCodec()
        case .parquet: try BlobFormats.parquetProvider().makeDecoder()
        }
    }
}

/// A blob format implemented outside this module (Parquet, in `FeedArchiveParquet`).
public protocol BlobFormatProvider: Sendable {
    func makeEncoder(level: Int, options: String) throws -> any BlobEncoder
    func makeDecoder() throws -> any BlobDecoder
}

/// Where the executable (and tests) plug in the Parquet codec.
public enum BlobFormats {
    private static let parquet = Mutex<(any BlobFormatProvider)?>(nil)

    public static func register(parquet provider: any BlobFormatProvider) { parquet.withLock { $0 = provider } }

    static func parquetProvider() throws -> any BlobFormatProvider {
        guard let provider = parquet.withLock({ $0 }) else {
            throw CodecError("Parquet blobs need the FeedArchiveParquet module, which this program did not register")
        }
        return provider
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
    /// Makes the encoder ready for a new frame with the same settings (after `finish`, or to
    /// drop a frame half written), keeping its memory: a context per blob costs page faults,
    /// and worker threads per blob with zstd's workers.
    func reset() throws
}

/// Decompresses one frame in chunks; `finish` fails if the frame was cut short.
public protocol BlobDecoder: AnyObject {
    /// Feeds compressed bytes; decoded bytes go to the sink.
    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws
    /// Confirms the frame ended completely (checksum verified by the codec).
    func finish() throws
    /// Confirms the frame ended, handing the sink what only the end makes known (a Parquet
    /// file decodes once its footer is read; the frame codecs have nothing left).
    func finish(to sink: ByteSink) throws
}

extension BlobDecoder {
    public func finish(to sink: ByteSink) throws { try finish() }
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
    func reset() throws {}
}

/// Encoders kept between blobs, by codec and settings, with their input buffers. A run
/// writes blobs one after another (at most a few open at once), so a handful is enough.
public final class EncoderPool: @unchecked Sendable {
    // @unchecked: `idle` is touched only under `lock`.
    public static let shared = EncoderPool()
    struct Key: Hashable {
        var compression: Compression
        var level: Int
        var workers: Int
        var options: String
    }
    /// An encoder and the buffer its input is gathered in.
    public struct Entry {
        public var encoder: any BlobEncoder
        public var buffer: [UInt8]
        let key: Key
    }
    private let lock = NSLock()
    private var idle: [Key: [Entry]] = [:]
    static let keptPerKey = 2

    /// An idle encoder for these settings, or a new one.
    public func take(_ compression: Compression, level: Int, workers: Int, options: String = "") throws -> Entry {
        let key = Key(compression: compression, level: level, workers: workers, options: options)
        if let entry = lock.withLock({ idle[key]?.popLast() }) { return entry }
        return Entry(
            encoder: try compression.makeEncoder(level: level, workers: workers, options: options), buffer: [], key: key
        )
    }

    /// Returns an encoder whose frame ended or was dropped; it is reset before it is kept.
    public func give(_ entry: Entry) {
        guard (try? entry.encoder.reset()) != nil else { return }
        var entry = entry
        entry.buffer.removeAll(keepingCapacity: true)
        lock.withLock {
            if idle[entry.key, default: []].count < Self.keptPerKey { idle[entry.key, default: []].append(entry) }
        }
    }
}

extension BlobDecoder {
    /// Decodes a whole in-memory frame (tests and small blobs).
    public func decodeAll(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        try bytes.withUnsafeBytes { try write($0) { out.append(contentsOf: $0) } }
        try finish { out.append(contentsOf: $0) }
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
