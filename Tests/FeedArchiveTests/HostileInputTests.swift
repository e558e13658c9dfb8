import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

/// Mutation fuzzing of every parser that reads what others can write: job files, tokens,
/// checkpoint.json, manifest lines, blobs. Seeds come from Tests/Corpus (kept in the repo).
/// No input may crash or hang; each gets a clear, typed error or parses.
@Suite struct HostileInputTests {
    static let iterations = Int(ProcessInfo.processInfo.environment["FEEDARCHIVE_FUZZ_ITERATIONS"] ?? "") ?? 1500
    static let seed = UInt64(ProcessInfo.processInfo.environment["FEEDARCHIVE_FUZZ_SEED"] ?? "") ?? 20_261_123

    static func corpus(_ folder: String) throws -> [[UInt8]] {
        var url = URL(fileURLWithPath: #filePath)
        url.deleteLastPathComponent()
        url.deleteLastPathComponent()
        let dir = url.path + "/Corpus/" + folder
        return try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map {
            Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + $0)))
        }
    }

    static let specials: [[UInt8]] =
        ["{", "}", "\"", ":", "\n", "\\", "[", "]", ",", "${", "- ", "&a ", "*a", "!!binary ", "\u{FEFF}"]
        .map { Array($0.utf8) } + [[0x00], [0xFF], [0xC3], [0xED, 0xA0, 0x80]]

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let at = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<7, using: &rng) {
            case 0 where !bytes.isEmpty: bytes[at] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            case 1 where !bytes.isEmpty: bytes[at] = UInt8.random(in: 0...255, using: &rng)
            case 2 where !bytes.isEmpty:
                bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...16, using: &rng)))
            case 3: bytes.insert(contentsOf: specials.randomElement(using: &rng)!, at: at)
            case 4: bytes = Array(bytes.prefix(at))
            case 5 where !bytes.isEmpty:
                let end = min(bytes.count, at + Int.random(in: 1...32, using: &rng))
                bytes.insert(contentsOf: bytes[at..<end], at: Int.random(in: 0...bytes.count, using: &rng))
            default:
                bytes.insert(
                    contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in
                        UInt8.random(in: 0...255, using: &rng)
                    }, at: at)
            }
        }
        return bytes
    }

    @Test func jobFiles() throws {
        var rng = SplitMix64(state: Self.seed)
        var accepted = 0
        for input in try Self.corpus("jobs") {
            for _ in 0..<Self.iterations {
                let text = String(decoding: Self.mutate(input, &rng), as: UTF8.self)
                do {
                    _ = try JobConfig.parse(yaml: text, file: "fuzz.yaml")
                    accepted += 1
                } catch let error as FeedArchiveError {
                    guard case .badJobFile(let place, let message) = error else {
                        Issue.record("job file error of the wrong kind: \(error)")
                        continue
                    }
                    #expect(place.hasPrefix("fuzz.yaml") && !message.isEmpty)
                }
            }
        }
        #expect(accepted > 0)  // the mutator also produces valid files: the corpus is live
    }

    @Test func tokens() throws {
        var rng = SplitMix64(state: Self.seed &+ 1)
        for input in try Self.corpus("tokens") {
            let clean = Array(input.prefix { $0 != 0x0A })
            #expect(throws: Never.self) { try ContinuationToken.decode(String(decoding: clean, as: UTF8.self)) }
            for _ in 0..<Self.iterations {
                let text = String(decoding: Self.mutate(clean, &rng), as: UTF8.self)
                do {
                    let token = try ContinuationToken.decode(text)
                    #expect(try ContinuationToken.decode(token.encoded) == token)
                } catch let error as FeedArchiveError {
                    #expect(error.exitCode == 65)
                }
                _ = StartSpec.parse(text)
            }
        }
    }

    @Test func checkpointFiles() throws {
        var rng = SplitMix64(state: Self.seed &+ 2)
        let dir = TempDirectory()
        let path = dir.path + "/checkpoint.json"
        for input in try Self.corpus("checkpoints") {
            for _ in 0..<Self.iterations {
                try Data(Self.mutate(input, &rng)).write(to: URL(fileURLWithPath: path))
                do {
                    _ = try Checkpoint.load(from: path, fs: PosixFileSystem())
                } catch let error as FeedArchiveError {
                    #expect(error.exitCode == 65 && "\(error)".contains(path))
                }
            }
        }
    }

    @Test func manifestSegments() throws {
        var rng = SplitMix64(state: Self.seed &+ 3)
        let dir = TempDirectory()
        let store = ManifestStore(directory: dir.path, fs: PosixFileSystem(), fileMode: 0o640)
        let intact = try #require(try Self.corpus("manifests").first)
        try Data(intact).write(to: URL(fileURLWithPath: dir.path + "/00000001.jsonl"))
        #expect(try store.read().1 == nil)
        for _ in 0..<Self.iterations {
            try Data(Self.mutate(intact, &rng)).write(to: URL(fileURLWithPath: dir.path + "/00000001.jsonl"))
            let (manifest, damage) = try store.read()
            if let damage {
                #expect(damage.line >= 1 && !damage.message.isEmpty && damage.file.hasSuffix("00000001.jsonl"))
            }
            #expect(manifest.entries.count <= 4)
        }
    }

    @Test func blobs() throws {
        var rng = SplitMix64(state: Self.seed &+ 4)
        for (index, input) in try Self.corpus("blobs").enumerated() {
            let compression: Compression = [Compression.none, .lz4, .zstd][index]
            for _ in 0..<Self.iterations {
                let mutated = Self.mutate(input, &rng)
                do {
                    let decoded = try compression.makeDecoder().decodeAll(mutated)
                    _ = decoded.split(separator: 0x0A).map { JSONText.isValid(Array($0)) }
                } catch is CodecError {
                    // refused with a message: fine
                }
            }
        }
    }

    /// Verify and cat over an archive whose manifest and blobs were damaged at random: a report
    /// or a typed error, never a crash.
    @Test func verifyOverDamagedArchives() async throws {
        var rng = SplitMix64(state: Self.seed &+ 5)
        for round in 0..<25 {
            let dir = TempDirectory()
            let (job, source, archive) = try await archivedMemoryFeed(in: dir)
            var victims = [archive.layout.manifestDirectory + "/00000001.jsonl", archive.layout.checkpointFile]
            victims += archive.manifest.entries.compactMap(\.path).map(archive.layout.absolute)
            let victim = victims.randomElement(using: &rng)!
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: victim)))
            try Data(Self.mutate(bytes, &rng)).write(to: URL(fileURLWithPath: victim))
            do {
                let report = try Verifier(job: job).verify(deep: true)
                _ = report.isClean
            } catch let error as FeedArchiveError {
                #expect([65, 74].contains(error.exitCode), "round \(round): \(error)")
            }
            // A run after the damage either recovers or refuses with a data error; never more.
            do {
                _ = try await ArchiveRunner(job: job, source: source).run(RunOptions())
            } catch let error as FeedArchiveError {
                #expect(error.exitCode == 65, "round \(round): \(error)")
            }
        }
    }
}
