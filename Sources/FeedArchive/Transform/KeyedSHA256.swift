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

    static let rounds: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

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
