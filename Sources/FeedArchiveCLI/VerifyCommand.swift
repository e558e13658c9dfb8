import ArgumentParser
import FeedArchive
import Foundation

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Prove a job's archive complete and intact from its origin to its checkpoint.",
        discussion: """
            Checks the manifest's hash chain, token continuity per partition, every blob's size and
            SHA-256, stray files, and the checkpoint against the manifest tail. --deep also
            decompresses every blob and checks its records; --against-source re-reads the source
            where it still holds the range and compares counts and hashes. Read-only. Exit 0 clean, 1 problems.

            Examples:
              feedarchive verify quickstart
              feedarchive verify quickstart --deep --json
              feedarchive verify quickstart --against-source
            """)

    @OptionGroup var selection: JobSelection
    var job: String { selection.job }

    @Flag(help: "Also decompress every blob and check its records.")
    var deep = false

    @Flag(help: "Also re-read each blob's range from the source, where it still holds it, and compare counts and hashes.")
    var againstSource = false

    @Flag(help: "Print a JSON report.")
    var json = false

    func run() async throws {
        let report = try await Frontend.run(job: job) {
            let config = try selection.load()
            var progress: (@Sendable (Int, Int) -> Void)?
            if Frontend.stderrIsTerminal && !json {
                progress = { @Sendable done, total in
                    FileHandle.standardError.write(Data("\r\u{1B}[Kverify: \(done)/\(total) blobs".utf8))
                    if done == total { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
                }
            }
            var report = try Verifier(job: config).verify(deep: deep, progress: progress)
            if againstSource {
                var compared = report
                try await Frontend.withSource(config) { source in
                    try await Verifier(job: config).compareWithSource(source, report: &compared)
                }
                report = compared
            }
            return report
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            var data = try encoder.encode(report)
            if var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] {
                object["clean"] = report.isClean
                data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            }
            print(String(decoding: data, as: UTF8.self))
        } else {
            for problem in report.problems {
                print("PROBLEM \(problem.kind): \(problem.path): \(problem.message)")
                if let fix = problem.fix { print("  fix: \(fix)") }
            }
            for note in report.notes { print("note: \(note)") }
            let verdict = report.isClean ? "clean" : "\(report.problems.count) problems"
            print("verify \(report.job)\(deep ? " --deep" : ""): \(verdict); \(report.blobs) blobs, \(report.records) changes, \(humanBytes(report.bytes)), \(report.duplicateRanges) duplicate ranges")
        }
        if !report.isClean { throw ExitCode(1) }
    }
}
