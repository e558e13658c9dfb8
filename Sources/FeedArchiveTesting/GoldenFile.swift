import FeedArchive
import Foundation

/// Output recorded once under `Tests/Corpus/golden/`, compared byte for byte on every test run:
/// the archive's bytes (envelopes, blobs, tokens, manifest lines) must not change by accident.
/// `FEEDARCHIVE_RECORD_GOLDEN=1` writes the file instead of comparing (a deliberate format
/// change, reviewed in the diff of the golden file).
public enum GoldenFile {
    /// nil when `text` equals the recorded file; otherwise the first differing line.
    public static func mismatch(_ text: String, name: String, testFile: String = #filePath) throws -> String? {
        var url = URL(fileURLWithPath: testFile)
        url.deleteLastPathComponent()
        url.deleteLastPathComponent()
        let path = url.path + "/Corpus/golden/" + name
        if ProcessInfo.processInfo.environment["FEEDARCHIVE_RECORD_GOLDEN"] == "1" {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            return "\(path) is missing: record it with FEEDARCHIVE_RECORD_GOLDEN=1"
        }
        let recorded = String(decoding: data, as: UTF8.self)
        if recorded == text { return nil }
        let old = recorded.split(separator: "\n", omittingEmptySubsequences: false)
        let new = text.split(separator: "\n", omittingEmptySubsequences: false)
        for index in 0..<max(old.count, new.count) {
            let a = index < old.count ? String(old[index]) : "<none>"
            let b = index < new.count ? String(new[index]) : "<none>"
            if a != b { return "\(path):\(index + 1): recorded\n  \(a)\nnow\n  \(b)" }
        }
        return "\(path): differs"
    }

    /// The manifest of a job's archive with what legitimately differs between two runs taken
    /// out: `created_at` and `run`, and the source fingerprint inside tokens (it hashes facts
    /// such as a file's inode or a server's system identifier).
    public static func normalizedManifest(_ job: JobConfig) throws -> String {
        let archive = JobArchive(job: job)
        _ = try archive.load()
        var lines: [String] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: archive.layout.manifestDirectory).sorted() {
            let text = try String(contentsOfFile: archive.layout.manifestDirectory + "/" + file, encoding: .utf8)
            for line in text.split(separator: "\n") {
                // Textual, so the field order and the escaping are compared too.
                var normalized = String(line)
                for (field, pattern) in [
                    ("created_at", #""created_at":"[^"]*""#), ("run", #""run":"[^"]*""#),
                    ("prev", #""prev":"[0-9a-f]{64}""#),
                ] {
                    normalized = normalized.replacingOccurrences(
                        of: pattern, with: "\"\(field)\":\"*\"", options: .regularExpression)
                }
                for key in ["from_token", "to_token"] {
                    guard let range = normalized.range(of: #""\#(key)":"[^"]*""#, options: .regularExpression) else {
                        continue
                    }
                    let value = String(normalized[range].dropFirst(key.count + 4).dropLast())
                    normalized.replaceSubrange(range, with: "\"\(key)\":\"\(try normalizedToken(value))\"")
                }
                lines.append(normalized)
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A token with its source fingerprint replaced by `*`.
    public static func normalizedToken(_ text: String) throws -> String {
        var token = try ContinuationToken.decode(text)
        if token.source != nil { token.source = "*" }
        return token.encoded
    }
}
