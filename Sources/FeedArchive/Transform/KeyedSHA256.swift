import CSHA256
import Crypto

/// HMAC-SHA-256 (RFC 2104, FIPS 180-4) under one key, keyed once: the inner and outer pad
/// blocks are hashed when the key is made, so a short value costs two block compressions and
/// no allocation. `redact` hashes every value it hides with it; swift-crypto's HMAC copies its
/// hash contexts on the heap per value, which made redaction most of a transform's cost. The
/// tests compare both over keys and values of every length around the block size.
struct KeyedSHA256: Sendable {
    /// The state after the key's inner (0x36) and outer (0x5c) pad blocks.
    let inner: SIMD8<UInt32>
    let outer: SIMD8<UInt32>

    static let initial = SIMD8<UInt32>(
        0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19)

    /// The round constants, from the C target (one table for both block functions).
    static let rounds: [UInt32] = withUnsafeBytes(of: feedarchive_sha256_k) { Array($0.bindMemory(to: UInt32.self)) }

    init(key: [UInt8]) {
        // A key longer than a block is replaced by its hash.
        var key = key.count > 64 ? Array(SHA256.hash(data: key)) : key
        key += [UInt8](repeating: 0, count: 64 - key.count)
        var inner = Self.initial
        var outer = Self.initial
        Self.compress(&inner, key.map { $0 ^ 0x36 })
        Self.compress(&outer, key.map { $0 ^ 0x5c })
        self.inner = inner
        self.outer = outer
    }

    private static func compress(_ state: inout SIMD8<UInt32>, _ block: [UInt8]) {
        block.withUnsafeBufferPointer { bytes in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { schedule in
                compress(&state, bytes.baseAddress!, schedule.baseAddress!)
            }
        }
    }

    @inline(__always)
    private static func rotate(_ x: UInt32, _ n: UInt32) -> UInt32 { (x &>> n) | (x &<< (32 &- n)) }

    /// One round: `d` and `h` take the new values of `e` and `a`.
    @inline(__always)
    private static func round(
        _ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: inout UInt32, _ e: UInt32, _ f: UInt32, _ g: UInt32,
        _ h: inout UInt32, _ kw: UInt32
    ) {
        let t1 = h &+ (rotate(e, 6) ^ rotate(e, 11) ^ rotate(e, 25)) &+ ((e & f) ^ (~e & g)) &+ kw
        d = d &+ t1
        h = t1 &+ (rotate(a, 2) ^ rotate(a, 13) ^ rotate(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
    }

    /// The processor has the SHA extensions: blocks go to `feedarchive_sha256_blocks`.
    static let hardware = feedarchive_sha256_hardware() != 0

    /// One 64-byte block into `state`; `w` has room for the 64-word schedule.
    private static func compress(
        _ state: inout SIMD8<UInt32>, _ block: UnsafePointer<UInt8>, _ w: UnsafeMutablePointer<UInt32>
    ) {
        if hardware {
            withUnsafeMutablePointer(to: &state) {
                $0.withMemoryRebound(to: UInt32.self, capacity: 8) { feedarchive_sha256_blocks($0, block, 1) }
            }
            return
        }
        software(&state, block, w)
    }

    /// `compress` in Swift, for processors without the SHA extensions (and for the tests).
    static func software(
        _ state: inout SIMD8<UInt32>, _ block: UnsafePointer<UInt8>, _ w: UnsafeMutablePointer<UInt32>
    ) {
        for i in 0..<16 {
            let p = block + 4 * i
            w[i] = UInt32(p[0]) << 24 | UInt32(p[1]) << 16 | UInt32(p[2]) << 8 | UInt32(p[3])
        }
        for i in 16..<64 {
            let s0 = rotate(w[i - 15], 7) ^ rotate(w[i - 15], 18) ^ (w[i - 15] &>> 3)
            let s1 = rotate(w[i - 2], 17) ^ rotate(w[i - 2], 19) ^ (w[i - 2] &>> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var a = state[0]
        var b = state[1]
        var c = state[2]
        var d = state[3]
        var e = state[4]
        var f = state[5]
        var g = state[6]
        var h = state[7]
        rounds.withUnsafeBufferPointer { k in
            // Eight rounds a turn, the variables' roles rotated instead of their values moved.
            var i = 0
            while i < 64 {
                round(a, b, c, &d, e, f, g, &h, k[i] &+ w[i])
                round(h, a, b, &c, d, e, f, &g, k[i + 1] &+ w[i + 1])
                round(g, h, a, &b, c, d, e, &f, k[i + 2] &+ w[i + 2])
                round(f, g, h, &a, b, c, d, &e, k[i + 3] &+ w[i + 3])
                round(e, f, g, &h, a, b, c, &d, k[i + 4] &+ w[i + 4])
                round(d, e, f, &g, h, a, b, &c, k[i + 5] &+ w[i + 5])
                round(c, d, e, &f, g, h, a, &b, k[i + 6] &+ w[i + 6])
                round(b, c, d, &e, f, g, h, &a, k[i + 7] &+ w[i + 7])
                i += 8
            }
        }
        state &+= SIMD8(a, b, c, d, e, f, g, h)
    }

    /// The last blocks of a message whose first `prefix` bytes (the pad block) are hashed:
    /// `tail` (under 64 bytes), 0x80, zeros, and the length in bits.
    private static func finish(
        _ state: inout SIMD8<UInt32>, tail: UnsafeRawBufferPointer, total: Int, _ block: UnsafeMutablePointer<UInt8>,
        _ w: UnsafeMutablePointer<UInt32>
    ) {
        block.initialize(repeating: 0, count: 128)
        if tail.count > 0 { UnsafeMutableRawPointer(block).copyMemory(from: tail.baseAddress!, byteCount: tail.count) }
        block[tail.count] = 0x80
        let blocks = tail.count + 9 <= 64 ? 1 : 2
        let bits = UInt64(total) &* 8
        for i in 0..<8 { block[blocks * 64 - 1 - i] = UInt8(truncatingIfNeeded: bits &>> (8 * UInt64(i))) }
        compress(&state, block, w)
        if blocks == 2 { compress(&state, block + 64, w) }
    }

    /// The MAC of `message`, 32 bytes into `digest`.
    func authenticate(_ message: UnsafeRawBufferPointer, into digest: UnsafeMutablePointer<UInt8>) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { schedule in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 160) { scratch in
                let w = schedule.baseAddress!
                let block = scratch.baseAddress!
                var state = inner
                var offset = 0
                while message.count - offset >= 64 {
                    Self.compress(&state, message.baseAddress!.assumingMemoryBound(to: UInt8.self) + offset, w)
                    offset += 64
                }
                Self.finish(
                    &state, tail: UnsafeRawBufferPointer(rebasing: message[offset...]), total: 64 + message.count,
                    block, w)
                // The inner hash, after the two blocks `finish` may use.
                let innerDigest = block + 128
                Self.store(state, into: innerDigest)
                var result = outer
                Self.finish(
                    &result, tail: UnsafeRawBufferPointer(start: innerDigest, count: 32), total: 64 + 32, block, w)
                Self.store(result, into: digest)
            }
        }
    }

    private static func store(_ state: SIMD8<UInt32>, into bytes: UnsafeMutablePointer<UInt8>) {
        for i in 0..<8 {
            bytes[4 * i] = UInt8(truncatingIfNeeded: state[i] &>> 24)
            bytes[4 * i + 1] = UInt8(truncatingIfNeeded: state[i] &>> 16)
            bytes[4 * i + 2] = UInt8(truncatingIfNeeded: state[i] &>> 8)
            bytes[4 * i + 3] = UInt8(truncatingIfNeeded: state[i])
        }
    }
}
