import Crypto
import Foundation

/// Streams one batch through the encoder into a temp file in the blob's final directory,
/// hashing the compressed bytes on the way. Memory stays at one input buffer whatever the
/// batch size.
public final class BlobWriter {
    /// What a finished blob is: its size, hash and the uncompressed byte count.
    public struct Result: Sendable {
        public var bytes: Int64
        public var rawBytes: Int64
        public var sha256: String
    }

    public let tempPath: String
    private let file: any WritableFile
    /// Given back to the pool as soon as the frame is finished, for the next blob.
    private var pooled: EncoderPool.Entry?
    private var encoder: (any BlobEncoder)? { pooled?.encoder }
    private var hasher = SHA256()
    private var buffer: [UInt8]
    private let bufferLimit: Int
    private var compressedBytes: Int64 = 0
    public private(set) var rawBytes: Int64 = 0
    private var closed = false
    /// Frames up to this size give their encoder back to the pool.
    static let pooledFrameLimit: Int64 = 1 << 20

    public init(
        fs: any FileSystem, tempPath: String, compression: Compression, level: Int, workers: Int, mode: mode_t,
        bufferLimit: Int? = nil, options: String = ""
    ) throws {
        self.tempPath = tempPath
        var pooled = try EncoderPool.shared.take(compression, level: level, workers: workers, options: options)
        do {
            self.file = try fs.create(tempPath, mode: mode)
        } catch {
            EncoderPool.shared.give(pooled)
            throw error
        }
        self.buffer = pooled.buffer
        pooled.buffer = []  // one owner, so appending never copies it
        self.pooled = pooled
        // Compressing on the reading thread, 64 KiB at a time (~0.2 ms at level 3) sends the
        // reader back to its source soon enough that a server writing to it does not stall;
        // workers take 1 MiB in one copy.
        self.bufferLimit = bufferLimit ?? (workers == 0 ? 64 << 10 : 1 << 20)
        buffer.reserveCapacity(self.bufferLimit + 4096)
    }

    /// Adds one envelope line (the newline is added here).
    @inline(__always)
    public func append(line: ArraySlice<UInt8>) throws {
        buffer.append(contentsOf: line)
        buffer.append(0x0A)
        rawBytes += Int64(line.count + 1)
        if buffer.count >= bufferLimit { try flushBuffer() }
    }

    /// Adds bytes as they are: whole envelope lines, newlines included, possibly split across
    /// calls (a compaction copies decoded blobs).
    public func append(raw bytes: UnsafeRawBufferPointer) throws {
        buffer.append(contentsOf: bytes)
        rawBytes += Int64(bytes.count)
        if buffer.count >= bufferLimit { try flushBuffer() }
    }

    private func flushBuffer() throws {
        guard !buffer.isEmpty else { return }
        guard let encoder else { throw CodecError("the blob \(tempPath) was already finished") }
        try buffer.withUnsafeBytes { input in try encoder.write(input, to: sink) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func sink(_ output: UnsafeRawBufferPointer) throws {
        hasher.update(bufferPointer: output)
        compressedBytes += Int64(output.count)
        try file.write(output)
    }

    /// Ends the frame, fsyncs and closes the temp file. The caller renames it into place.
    public func finish() throws -> Result {
        let result = try end()
        try syncAndClose()
        return result
    }

    /// Ends the frame and starts the temp file's writeback without waiting for it: a group
    /// commit then makes many blobs durable with one journal commit (`syncAndClose` each).
    public func end() throws -> Result {
        if let ended { return ended }
        try flushBuffer()
        guard let encoder else { throw CodecError("the blob \(tempPath) was already finished") }
        try encoder.finish(to: sink)
        releaseEncoder()
        file.startWriteback()
        let result = Result(bytes: compressedBytes, rawBytes: rawBytes, sha256: hexString(hasher.finalize()))
        ended = result
        return result
    }
    private var ended: Result?

    /// fsyncs and closes the temp file of an ended frame; does nothing when it is closed.
    public func syncAndClose() throws {
        guard !closed else { return }
        try file.sync()
        closed = true
        try file.close()
    }

    private func releaseEncoder() {
        guard var entry = pooled else { return }
        pooled = nil
        swap(&entry.buffer, &buffer)
        // A context that compressed a large frame holds large buffers (several MiB with zstd's
        // workers); a large blob pays for a new context anyway, so it is not kept.
        guard rawBytes <= Self.pooledFrameLimit else { return }
        EncoderPool.shared.give(entry)
    }

    /// Drops the blob in progress: closes and deletes the temp file.
    public func abort(fs: any FileSystem) {
        releaseEncoder()
        if !closed { try? file.close() }
        closed = true
        try? fs.remove(tempPath)
    }
}
