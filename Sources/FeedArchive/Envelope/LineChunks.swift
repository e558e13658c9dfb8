/// The envelope lines of one page, written into chunks below glibc's mmap threshold (512 KiB,
/// set by the executable). A chunk freed after its page is compressed is reused for a later
/// page; one buffer for a whole page (about 1 MB) would be a fresh mapping each time, whose page
/// faults and zeroing cost up to a tenth of a run's CPU. Lines are slices of their chunk, taken
/// once the chunk is full (a slice taken earlier would make the next append copy the chunk).
public struct LineChunks {
    public static let chunkBytes = 384 << 10
    /// The chunk being written: write a line's bytes here between `startLine` and `endLine`.
    public var out: [UInt8] = []
    private var pending: [Range<Int>] = []
    private var lines: [ArraySlice<UInt8>] = []

    public init(expectedLines: Int = 0) {
        out.reserveCapacity(Self.chunkBytes + (64 << 10))
        lines.reserveCapacity(expectedLines)
    }

    /// Where the next line starts (in a fresh chunk when this one is full).
    @inline(__always)
    public mutating func startLine() -> Int {
        if out.count >= Self.chunkBytes { seal() }
        return out.count
    }

    @inline(__always)
    public mutating func endLine(_ start: Int) { pending.append(start..<out.count) }

    /// The lines written, in order.
    public mutating func finish() -> [ArraySlice<UInt8>] {
        seal(startingAnother: false)
        return lines
    }

    private mutating func seal(startingAnother: Bool = true) {
        for range in pending { lines.append(out[range]) }
        pending.removeAll(keepingCapacity: true)
        out = []
        if startingAnother { out.reserveCapacity(Self.chunkBytes + (64 << 10)) }
    }
}
