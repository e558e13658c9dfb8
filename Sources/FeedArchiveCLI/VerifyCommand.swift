import ArgumentParser
import FeedArchive
import Foundation

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Prove a job's archive complete and intact from its origin to its checkpoint.",
        discussion: """
            Checks the manifest's hash chain, token continuity per partition, every blob's size and SHA-256, stray files, and the checkpoint against the manifest tail. --deep also decompresses every blob and checks its records; --against-source re-reads the source where it still holds the range and compares counts and hashes. Exit 0 clean, 1 problems.

            A verify continues from the last clean one of the same depth (_feedarchive/verified.json, the only file verify writes): the chain from the line it reached, the blobs named after it, continuity from its live token, stray files in the folders of those blobs. A day's new blobs take the same time whatever the archive's size. --full checks everything from the origin again: a blob changed or deleted after it was verified, damage before the mark, strays anywhere.

            Examples:
              feedarchive verify quickstart
              feedarchive verify quickstart --deep --json
              feedarchive verify quickstart --against-source
            """)

    @OptionGroup var selection: JobSelection

    @Flag(help: "Also decompress every blob and check its records.")
    var deep = false

    @Flag(help: "Check everything from the origin, not only what was added since the last clean verify.")
    var full = false

    @Flag(
        help: "Also re-read each blob's range from the source, where it still holds it, and compare counts and hashes.")
    var againstSource = false

    @Flag(help: "Print a JSON report.")
    var json = false

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            let verifier = Verifier(job: try selection.load())
            let report = try await verifier.verify(
                deep: deep, full: full, against: againstSource ? .registry(.all) : nil, progress: progress)
            print(try json ? report.json() : text(report))
            if !report.isClean { throw ExitCode(1) }
        }
    }

    /// `verify: 12/40 blobs` on a terminal, for the text report only.
    private var progress: (@Sendable (Int, Int) -> Void)? {
        guard Frontend.stderrIsTerminal && !json else { return nil }
        return { @Sendable done, total in
            FileHandle.standardError.write(Data("\r\u{1B}[Kverify: \(done)/\(total) blobs".utf8))
            if done == total { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        }
    }

    private func text(_ report: VerifyReport) -> String {
        var lines: [String] = []
        for problem in report.problems {
            lines.append("PROBLEM \(problem.kind): \(problem.path): \(problem.message)")
            if let fix = problem.fix { lines.append("  fix: \(fix)") }
        }
        for note in report.notes { lines.append("note: \(note)") }
        let verdict = report.isClean ? "clean" : "\(report.problems.count) problems"
        lines.append(
            "verify \(report.job)\(deep ? " --deep" : ""): \(verdict)\(report.after > 0 ? " after manifest seq \(report.after) (the last clean verify; --full for all)" : ""); \(report.blobs) blobs, \(report.records) changes, \(humanBytes(report.bytes)), \(report.duplicateRanges) duplicate ranges"
        )
        return lines.joined(separator: "\n")
    }
}
