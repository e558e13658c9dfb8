import CSHA256
import Crypto
import Foundation
import Testing

@testable import FeedArchive

/// The engine (runs of field steps fused into one walk per document) against the reference
/// model (each step a pass of its own): the same bytes, the same filter verdict and folder,
/// the same failures, on random documents under random step lists.
@Suite struct TransformEngineTests {
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Few names, so that paths meet fields often; one of them written with an escape.
    static let names = ["a", "b", "c", "é", "x y"]

    static func name(_ random: inout Generator) -> String {
        names.randomElement(using: &random)!
    }

    /// A field name as a document writes it: sometimes escaped, sometimes spaced.
    static func written(_ name: String, _ random: inout Generator) -> String {
        if name == "b" && Bool.random(using: &random) { return #""\u0062""# }
        if name == "é" && Bool.random(using: &random) { return #""\u00e9""# }
        return "\"\(name)\""
    }

    static func value(_ random: inout Generator, depth: Int) -> String {
        let space = Bool.random(using: &random) ? " " : ""
        switch Int.random(in: 0..<(depth < 3 ? 10 : 6), using: &random) {
        case 0: return "null"
        case 1: return "\(Int.random(in: -50...50, using: &random))"
        case 2: return "\(Double(Int.random(in: -9...9, using: &random)) / 4)"
        case 3: return Bool.random(using: &random) ? "true" : "false"
        case 4:
            // Accents precomposed, decomposed and escaped; a lone surrogate.
            return [
                "\"s\"", "\"x\\\"q\\\"\"", "\"\\u00e9t\\u00e9\"", "\"ünï\"", "\"\"", "\"\u{e9}\"", "\"e\u{301}\"",
                "\"e\\u0301\"", "\"\\ud800\"",
            ].randomElement(using: &random)!
        case 5: return ["\"1\"", "1", "\"a\""].randomElement(using: &random)!
        case 6, 7: return object(&random, depth: depth + 1)
        default:
            let count = Int.random(in: 0...3, using: &random)
            let elements = (0..<count).map { _ in value(&random, depth: depth + 1) }
            return "[" + space + elements.joined(separator: "," + space) + space + "]"
        }
    }

    static func object(_ random: inout Generator, depth: Int) -> String {
        let count = Int.random(in: 0...4, using: &random)
        let space = Bool.random(using: &random) ? " " : ""
        let fields = (0..<count).map { _ in
            written(name(&random), &random) + space + ":" + space + value(&random, depth: depth)
        }
        return "{" + space + fields.joined(separator: "," + space) + space + "}"
    }

    static func path(_ random: inout Generator) -> String {
        (0..<Int.random(in: 1...3, using: &random)).map { _ in name(&random) }.joined(separator: ".")
    }

    static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static func step(_ random: inout Generator, number: Int) -> String {
        func paths() -> String {
            "[" + (0..<Int.random(in: 1...3, using: &random)).map { _ in quoted(path(&random)) }.joined(separator: ", ")
                + "]"
        }
        switch Int.random(in: 0..<14, using: &random) {
        case 0, 1: return "- drop: \(paths())"
        case 2, 3: return "- select: \(paths())"
        case 4, 5: return "- rename: {\(quoted(path(&random))): \(quoted(name(&random) + "2"))}"
        case 6, 7: return "- redact: {fields: \(paths()), key: \"0123456789abcdef-engine\"}"
        case 8: return "- redact: {fields: \(paths()), mask: \"***\"}"
        case 9:
            let target = quoted(path(&random))
            return Bool.random(using: &random)
                ? "- set: {\(target): 5, \(quoted(name(&random) + "3")): \"k\"}"
                : "- set: {\(target): {field: \(quoted(path(&random)))}}"
        case 10:
            let field = quoted(["after.", "before.", "key."].randomElement(using: &random)! + path(&random))
            let test = [
                "equals: 1", "equals: s", "in: [1, \"a\", null]", "exists: true", "exists: false", "gt: 0",
                "equals: \"\u{e9}\"", "in: [\"e\u{301}\", \"ünï\"]",
            ].randomElement(using: &random)!
            return
                "- filter: {name: f\(number), \(Bool.random(using: &random) ? "keep" : "drop"): {field: \(field), \(test)}}"
        case 11:
            return "- filter: {name: f\(number), drop: {op: [d]}}"
        case 12:
            return "- partition_by: \"t={after.\(path(&random))}/k={key}\""
        default:
            return "- redact: {fields: \(paths()), mask: \"#\"}"
        }
    }

    enum Outcome: Equatable {
        case record([UInt8], String?)
        case filtered(Int, String?)
        case failed
    }

    static func outcome(_ body: (inout [UInt8], inout String?) throws -> Int?) -> Outcome {
        var out: [UInt8] = []
        var path: String?
        do {
            if let filtered = try body(&out, &path) { return .filtered(filtered, path) }
            return .record(out, path)
        } catch is Transform.Failure {
            return .failed
        } catch {
            return .failed
        }
    }

    @Test(arguments: 0..<8)
    func theEngineWritesWhatTheStepsOneByOneWrite(seed: UInt64) throws {
        var random = Generator(state: seed &* 7919 &+ 17)
        var compared = 0
        var records = 0
        for round in 0..<150 {
            var lines: [String] = []
            var partitioned = false
            for number in 0..<Int.random(in: 1...5, using: &random) {
                let line = Self.step(&random, number: number)
                if line.hasPrefix("- partition_by") {
                    if partitioned { continue }
                    partitioned = true
                }
                lines.append(line)
            }
            let yaml = lines.joined(separator: "\n") + "\n"
            let transform: Transform
            do {
                // Literal keys: the environment belongs to the tests that set it.
                transform = try Transform.parse(try ConfigNode.parse(yaml: yaml, file: "job.yaml"), base: ".")
            } catch {
                continue  // a random list the parser refuses (two filters of one name, ...)
            }
            for _ in 0..<20 {
                let after = Int.random(in: 0..<8, using: &random) == 0 ? "null" : Self.object(&random, depth: 0)
                let before = Bool.random(using: &random) ? "null" : Self.object(&random, depth: 0)
                let key = Bool.random(using: &random) ? "\"k\"" : Self.object(&random, depth: 1)
                let op = ["c", "u", "d"].randomElement(using: &random)!
                let line = Array(
                    (#"{"pos":"1","part":"0","op":"\#(op)","ts":null,"key":\#(key),"after":\#(after),"before":\#(before),"source":{"table":"t"}}"#)
                        .utf8)[...]
                let engine = Self.outcome { try transform.apply(line, into: &$0, path: &$1) }
                let reference = Self.outcome { try transform.referenceApply(line, into: &$0, path: &$1) }
                if engine != reference {
                    Issue.record(
                        """
                        seed \(seed) round \(round): the engine and the reference differ
                        \(yaml)line: \(String(decoding: line, as: UTF8.self))
                        engine:    \(Self.describe(engine))
                        reference: \(Self.describe(reference))
                        """)
                    return
                }
                compared += 1
                if case .record = engine { records += 1 }
            }
        }
        // The generator makes lists the parser takes and records that pass them.
        #expect(compared > 1500 && records > 500, "compared \(compared), records \(records)")
    }

    /// The value scanner every reader of envelopes uses finds the end of each value: strings
    /// of every length with escapes (a quote, a backslash, a backslash before the quote) at
    /// every offset of the eight-byte words it reads.
    @Test func skipValueFindsTheEndOfEveryValue() throws {
        var random = Generator(state: 7)
        let pieces = ["a", "é", "\\\"", "\\\\", "\\u00e9", " ", "\\n", ",", "}", "]", "{", "["]
        for round in 0..<4000 {
            var value: String
            if round % 2 == 0 {
                let text = (0..<Int.random(in: 0...40, using: &random)).map { _ in pieces.randomElement(using: &random)!
                }
                value = "\"" + text.joined() + "\""
            } else {
                value = Self.value(&random, depth: 0)
            }
            let prefix = String(repeating: " ", count: round % 9)
            // A number or a literal ends where something follows it; the rest end by themselves.
            let ownEnd = value.hasPrefix("\"") || value.hasPrefix("{") || value.hasPrefix("[")
            for tail in [",\"x\":1}", "}", "]"] + (ownEnd ? [""] : []) {
                let line = Array((prefix + value + tail).utf8)
                let end = try line.withUnsafeBufferPointer {
                    try EnvelopeFields.skipValue($0, from: prefix.utf8.count)
                }
                if end != prefix.utf8.count + value.utf8.count {
                    Issue.record("\(prefix + value + tail): the value ends at \(end)")
                    return
                }
            }
            // A string cut before its closing quote is an error, not a value.
            if value.hasPrefix("\"") {
                let cut = Array(value.utf8.dropLast())
                #expect(throws: (any Error).self) {
                    try cut.withUnsafeBufferPointer { try EnvelopeFields.skipValue($0, from: 0) }
                }
            }
        }
    }

    /// The engine's HMAC-SHA-256 against swift-crypto's, for keys and messages of every length
    /// around the block size (one and two final blocks, a key hashed first).
    @Test func keyedSHA256IsHMACSHA256() {
        var random = Generator(state: 42)
        for keyLength in [1, 16, 32, 55, 56, 63, 64, 65, 100, 200] {
            let key = (0..<keyLength).map { _ in UInt8.random(in: 0...255, using: &random) }
            let fast = KeyedSHA256(key: key)
            for length in 0...200 {
                let message = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
                let expected = Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
                var digest = [UInt8](repeating: 0, count: 32)
                digest.withUnsafeMutableBufferPointer { out in
                    message.withUnsafeBytes { fast.authenticate($0, into: out.baseAddress!) }
                }
                if digest != expected {
                    Issue.record("key of \(keyLength) bytes, message of \(length) bytes: the MACs differ")
                    return
                }
            }
        }
        // Both block functions, whichever the MAC above used: SHA-256 of one-block messages.
        for length in 0...55 {
            let message = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            var block = message + [0x80] + [UInt8](repeating: 0, count: 55 - length)
            block += (0..<8).reversed().map { UInt8(truncatingIfNeeded: UInt64(length * 8) >> (8 * UInt64($0))) }
            let expected = Array(SHA256.hash(data: message))
            var software = KeyedSHA256.initial
            block.withUnsafeBufferPointer { bytes in
                withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) {
                    KeyedSHA256.software(&software, bytes.baseAddress!, $0.baseAddress!)
                }
            }
            var words = [software]
            if KeyedSHA256.hardware {
                var hardware = KeyedSHA256.initial
                withUnsafeMutablePointer(to: &hardware) {
                    $0.withMemoryRebound(to: UInt32.self, capacity: 8) { feedarchive_sha256_blocks($0, block, 1) }
                }
                words.append(hardware)
            }
            for state in words {
                let digest = (0..<32).map { UInt8(truncatingIfNeeded: state[$0 / 4] >> (24 - 8 * UInt32($0 % 4))) }
                #expect(digest == expected, "a message of \(length) bytes")
            }
        }
        // RFC 4231, test case 2.
        let fast = KeyedSHA256(key: Array("Jefe".utf8))
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBufferPointer { out in
            Array("what do ya want for nothing?".utf8).withUnsafeBytes { fast.authenticate($0, into: out.baseAddress!) }
        }
        #expect(
            digest.map { String(format: "%02x", $0) }.joined()
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    static func describe(_ outcome: Outcome) -> String {
        switch outcome {
        case .record(let bytes, let path): return "record \(String(decoding: bytes, as: UTF8.self)) path \(path ?? "-")"
        case .filtered(let step, let path): return "filtered by step \(step + 1) path \(path ?? "-")"
        case .failed: return "failed"
        }
    }
}
