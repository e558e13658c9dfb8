import CZstd
import Foundation

/// Streaming zstd: one frame, content checksum on, optional worker threads so compression
/// runs beside the reader.
final class ZstdEncoder: BlobEncoder {
    private let context: OpaquePointer
    private var output: [UInt8]
    static let jobSize = Int(ProcessInfo.processInfo.environment["FEEDARCHIVE_ZSTD_JOB_SIZE"] ?? "") ?? (2 << 20)

    init(level: Int, workers: Int) throws {
        guard let context = ZSTD_createCCtx() else { throw CodecError("zstd: cannot create a compression context") }
        self.context = context
        self.output = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level)), "level \(level)")
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1), "checksum")
        if workers > 0 {
            // A libzstd built without threads refuses nbWorkers; compress on this thread then.
            if ZSTD_isError(ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, Int32(workers))) == 0 {
                // Smaller jobs than the default (4 windows) keep memory low; measured to cost
                // under 1% of ratio on the benchmark feed.
                _ = ZSTD_CCtx_setParameter(context, ZSTD_c_jobSize, Int32(Self.jobSize))
            }
        }
    }

    deinit { ZSTD_freeCCtx(context) }

    func reset() throws {
        try check(ZSTD_CCtx_reset(context, ZSTD_reset_session_only), "reset")
    }

    private func check(_ code: Int, _ what: String) throws {
        if ZSTD_isError(code) != 0 { throw CodecError("zstd \(what): \(String(cString: ZSTD_getErrorName(code)))") }
    }

    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws {
        guard input.count > 0 else { return }
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while inBuffer.pos < inBuffer.size {
            try drain(&inBuffer, ZSTD_e_continue, sink)
        }
    }

    func finish(to sink: ByteSink) throws {
        var inBuffer = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        while try drain(&inBuffer, ZSTD_e_end, sink) != 0 {}
    }

    @discardableResult
    private func drain(_ inBuffer: inout ZSTD_inBuffer, _ mode: ZSTD_EndDirective, _ sink: ByteSink) throws -> Int {
        try output.withUnsafeMutableBytes { out in
            var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
            let remaining = ZSTD_compressStream2(context, &outBuffer, &inBuffer, mode)
            try check(remaining, "compress")
            if outBuffer.pos > 0 { try sink(UnsafeRawBufferPointer(rebasing: out[0..<outBuffer.pos])) }
            return remaining
        }
    }
}

/// Streaming zstd decoding of exactly one frame; the codec checks the content checksum.
final class ZstdDecoder: BlobDecoder {
    private let context: OpaquePointer
    private var output: [UInt8]
    private var frameDone = false
    private var sawInput = false

    init() throws {
        guard let context = ZSTD_createDCtx() else { throw CodecError("zstd: cannot create a decompression context") }
        self.context = context
        self.output = [UInt8](repeating: 0, count: ZSTD_DStreamOutSize())
    }

    deinit { ZSTD_freeDCtx(context) }

    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws {
        guard input.count > 0 else { return }
        sawInput = true
        if frameDone { throw CodecError("zstd: data after the end of the frame") }
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            let (result, produced) = try output.withUnsafeMutableBytes { out -> (Int, Int) in
                var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                let result = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                if ZSTD_isError(result) != 0 {
                    throw CodecError("zstd: \(String(cString: ZSTD_getErrorName(result)))")
                }
                if outBuffer.pos > 0 { try sink(UnsafeRawBufferPointer(rebasing: out[0..<outBuffer.pos])) }
                return (result, outBuffer.pos)
            }
            if result == 0 {
                frameDone = true
                if inBuffer.pos < inBuffer.size { throw CodecError("zstd: data after the end of the frame") }
                return
            }
            if inBuffer.pos == inBuffer.size && produced < output.count { return }
        }
    }

    func finish() throws {
        if !sawInput { throw CodecError("zstd: empty file, no frame") }
        if !frameDone { throw CodecError("zstd: the frame is truncated (ended before its checksum)") }
    }
}
