/// Where the byte-level JSON writers (`JSONText`, the sources' envelope builders) put bytes:
/// a `[UInt8]`, or a `ByteWriter` for hot loops. The writers are generic and inlinable, so
/// each caller gets code specialized for its sink.
public protocol ByteOutput: ~Copyable {
    var count: Int { get }
    mutating func append(_ byte: UInt8)
    mutating func append(contentsOf bytes: UnsafeRawBufferPointer)
    /// Drops everything after the first `count` bytes (a writer taking back what it began).
    mutating func truncate(to count: Int)
}

extension ByteOutput where Self: ~Copyable {
    @inlinable @inline(__always)
    public mutating func append(contentsOf bytes: UnsafeBufferPointer<UInt8>) {
        append(contentsOf: UnsafeRawBufferPointer(bytes))
    }

    @inlinable @inline(__always)
    public mutating func append(contentsOf bytes: [UInt8]) {
        bytes.withUnsafeBytes { append(contentsOf: $0) }
    }

    @inlinable @inline(__always)
    public mutating func append(contentsOf bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { append(contentsOf: $0) }
    }
}

extension Array: ByteOutput where Element == UInt8 {
    @inlinable
    public mutating func truncate(to count: Int) {
        removeSubrange(count...)
    }
}

/// A growable byte buffer written through a pointer: an append is a bounds check and a store,
/// without the uniqueness check, the generic sequence path and the reference counting that
/// `Array.append` costs. Noncopyable, so it owns its memory alone; for the ~30 small writes an
/// envelope is made of, once built, the bytes go on in one copy (`bytes`).
public struct ByteWriter: ByteOutput, ~Copyable {
    @usableFromInline var base: UnsafeMutablePointer<UInt8>
    @usableFromInline var capacity: Int
    @usableFromInline var length = 0

    @inlinable public var count: Int { length }

    public init(capacity: Int = 1024) {
        self.capacity = Swift.max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// The bytes written so far; valid until the next write.
    @inlinable
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }

    @inlinable @inline(__always)
    public mutating func append(_ byte: UInt8) {
        if length == capacity { grow(toHold: length + 1) }
        base[length] = byte
        length += 1
    }

    @inlinable @inline(__always)
    public mutating func append(contentsOf bytes: UnsafeRawBufferPointer) {
        let added = bytes.count
        guard added > 0 else { return }
        if length + added > capacity {
            grow(toHold: length + added, appending: bytes)  // `bytes` may lie in the old buffer
        } else {
            UnsafeMutableRawPointer(base + length).copyMemory(from: bytes.baseAddress!, byteCount: added)
        }
        length += added
    }

    @inlinable
    public mutating func truncate(to count: Int) {
        precondition(count >= 0 && count <= length, "truncating \(length) bytes to \(count)")
        length = count
    }

    @inlinable
    public mutating func removeAll() { length = 0 }

    /// Moves to a buffer that holds `needed` bytes; `appending` (which may point into the old
    /// buffer, as `bytes` does) is copied in after the current bytes before the old one is freed.
    @usableFromInline
    mutating func grow(toHold needed: Int, appending: UnsafeRawBufferPointer? = nil) {
        var newCapacity = capacity
        while newCapacity < needed { newCapacity *= 2 }
        let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        newBase.initialize(from: base, count: length)
        if let appending, let source = appending.baseAddress {
            UnsafeMutableRawPointer(newBase + length).copyMemory(from: source, byteCount: appending.count)
        }
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }
}
