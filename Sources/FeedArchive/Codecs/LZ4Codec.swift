import CLZ4

/// LZ4 frame format with the content checksum on, readable by `lz4 -d`.
final class LZ4Encoder: BlobEncoder {
    private var context: OpaquePointer?
    private var preferences = LZ4F_preferences_t()
    private var output: [UInt8] = []
    private var started = false
    private static let chunk = 64 * 1024

    init(level: Int) throws {
        var context: OpaquePointer?
        let code = LZ4F_createCompressionContext(&context, UInt32(LZ4F_VERSION))
        if LZ4F_isError(code) != 0 { throw CodecError("lz4: \(String(cString: LZ4F_getErrorName(code)))") }
        self.context = context
        preferences.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
        preferences.frameInfo.blockSizeID = LZ4F_max4MB
        preferences.compressionLevel = Int32(level)
        output = [UInt8](repeating: 0, count: LZ4F_compressBound(Self.chunk, &preferences) + 64)
    }

    deinit { LZ4F_freeCompressionContext(context) }

    /// A new frame starts with `LZ4F_compressBegin`, which resets the context.
    func reset() throws { started = false }

    private func check(_ code: Int) throws -> Int {
        if LZ4F_isError(code) != 0 { throw CodecError("lz4: \(String(cString: LZ4F_getErrorName(code)))") }
        return code
    }

    private func begin(_ sink: ByteSink) throws {
        guard !started else { return }
        started = true
        try output.withUnsafeMutableBytes { out in
            let size = try check(LZ4F_compressBegin(context, out.baseAddress, out.count, &preferences))
            try sink(UnsafeRawBufferPointer(rebasing: out[0..<size]))
        }
    }

    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws {
        try begin(sink)
        var offset = 0
        while offset < input.count {
            let length = min(Self.chunk, input.count - offset)
            try output.withUnsafeMutableBytes { out in
                let size = try check(
                    LZ4F_compressUpdate(context, out.baseAddress, out.count, input.baseAddress! + offset, length, nil))
                if size > 0 { try sink(UnsafeRawBufferPointer(rebasing: out[0..<size])) }
            }
            offset += length
        }
    }

    func finish(to sink: ByteSink) throws {
        try begin(sink)
        try output.withUnsafeMutableBytes { out in
            let size = try check(LZ4F_compressEnd(context, out.baseAddress, out.count, nil))
            if size > 0 { try sink(UnsafeRawBufferPointer(rebasing: out[0..<size])) }
        }
    }
}

/// LZ4 frame decoding of exactly one frame; the library verifies the content checksum.
final class LZ4Decoder: BlobDecoder {
    private var context: OpaquePointer?
    private var output = [UInt8](repeating: 0, count: 256 * 1024)
    private var frameDone = false
    private var sawInput = false

    init() throws {
        var context: OpaquePointer?
        let code = LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))
        if LZ4F_isError(code) != 0 { throw CodecError("lz4: \(String(cString: LZ4F_getErrorName(code)))") }
        self.context = context
    }

    deinit { LZ4F_freeDecompressionContext(context) }

    func write(_ input: UnsafeRawBufferPointer, to sink: ByteSink) throws {
        guard input.count > 0 else { return }
        sawInput = true
        var offset = 0
        while offset < input.count {
            if frameDone { throw CodecError("lz4: data after the end of the frame") }
            var consumed = input.count - offset
            let (hint, produced) = try output.withUnsafeMutableBytes { out -> (Int, Int) in
                var produced = out.count
                let hint = LZ4F_decompress(
                    context, out.baseAddress, &produced, input.baseAddress! + offset, &consumed, nil)
                if LZ4F_isError(hint) != 0 { throw CodecError("lz4: \(String(cString: LZ4F_getErrorName(hint)))") }
                if produced > 0 { try sink(UnsafeRawBufferPointer(rebasing: out[0..<produced])) }
                return (hint, produced)
            }
            offset += consumed
            if hint == 0 { frameDone = true }
            if consumed == 0 && produced == 0 && !frameDone { break }
        }
    }

    func finish() throws {
        if !sawInput { throw CodecError("lz4: empty file, no frame") }
        if !frameDone { throw CodecError("lz4: the frame is truncated (ended before its checksum)") }
    }
}
