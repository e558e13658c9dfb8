import FeedArchive
import Foundation

/// Parquet as a blob format (`archive.format: parquet`): the encoder takes envelope lines as
/// any blob encoder takes bytes and writes a Parquet file; the decoder gives the lines back
/// once it has the whole file (its footer is at the end). Register it once at start-up:
/// `BlobFormats.register(parquet: ParquetBlobFormat())`.
public struct ParquetBlobFormat: BlobFormatProvider {
    /// Envelope bytes per row group.
    public let rowGroupBytes: Int

    public init(rowGroupBytes: Int = 128 << 20) { self.rowGroupBytes = rowGroupBytes }

    public func makeEncoder(level: Int, options: String) throws -> any BlobEncoder {
        // `row_group=N;` first when the job sets archive.row_group_size.
        var rowGroup = rowGroupBytes
        var columns = Substring(options)
        if columns.hasPrefix("row_group="), let end = columns.firstIndex(of: ";") {
            rowGroup = Int(columns[columns.index(columns.startIndex, offsetBy: 10)..<end]) ?? rowGroup
            columns = columns[columns.index(after: end)...]
        }
        return try ParquetBlobEncoder(
            level: Int32(level), rowGroupBytes: rowGroup, promoted: EnvelopeParquet.promoted(String(columns)))
    }

    public func makeDecoder() throws -> any BlobDecoder { ParquetBlobDecoder() }
}

final class ParquetBlobEncoder: BlobEncoder {
    let level: Int32
    let rowGroupBytes: Int
    private var writer: EnvelopeParquetWriter
    /// Output the writer produced, handed to the next sink.
    private let output = OutputBuffer()
    /// The start of a line the last write cut.
    private var partial: [UInt8] = []

    final class OutputBuffer {
        var bytes: [UInt8] = []
    }

    init(level: Int32, rowGroupBytes: Int, promoted: [ParquetColumn]) throws {
        self.level = level
        self.rowGroupBytes = rowGroupBytes
        let output = self.output
        writer = try EnvelopeParquetWriter(level: level, rowGroupBytes: rowGroupBytes, promoted: promoted) {
            output.bytes += $0
        }
    }

    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws {
        let bytes = input.bindMemory(to: UInt8.self)
        var start = 0
        func nextNewline() -> Int? {
            guard let base = bytes.baseAddress, start < bytes.count,
                let found = memchr(base + start, 0x0A, bytes.count - start)
            else { return nil }
            return base.distance(to: found.assumingMemoryBound(to: UInt8.self))
        }
        do {
            while let newline = nextNewline() {
                if partial.isEmpty {
                    try writer.append(line: UnsafeBufferPointer(rebasing: bytes[start..<newline]))
                } else {
                    partial += bytes[start..<newline]
                    let line = partial
                    partial.removeAll(keepingCapacity: true)
                    try line.withUnsafeBufferPointer { try writer.append(line: $0) }
                }
                start = newline + 1
            }
        } catch let error as ParquetError {
            throw CodecError("Parquet: \(error)")
        }
        partial += bytes[start...]
        try drain(to: sink)
    }

    func finish(to sink: ByteSink) throws {
        guard partial.isEmpty else { throw CodecError("Parquet: the last envelope has no newline") }
        do {
            try writer.finish()
        } catch let error as ParquetError {
            throw CodecError("Parquet: \(error)")
        }
        try drain(to: sink)
    }

    func reset() throws {
        partial.removeAll(keepingCapacity: true)
        output.bytes.removeAll(keepingCapacity: true)
        try writer.reset()
    }

    private func drain(to sink: ByteSink) throws {
        guard !output.bytes.isEmpty else { return }
        try output.bytes.withUnsafeBytes { try sink($0) }
        output.bytes.removeAll(keepingCapacity: true)
    }
}

final class ParquetBlobDecoder: BlobDecoder {
    private var file: [UInt8] = []

    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws { file += input }

    func finish() throws { try finish { _ in } }

    func finish(to sink: ByteSink) throws {
        let lines: [UInt8]
        do {
            lines = try EnvelopeParquet.envelopes(from: file)
        } catch let error as ParquetError {
            throw CodecError("Parquet: \(error)")
        }
        try lines.withUnsafeBytes { try sink($0) }
    }
}
