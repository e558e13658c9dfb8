import ArgumentParser
import FeedArchive
import Foundation

struct AckGapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ack-gap",
        abstract: "Sign off a known loss: verify then reports that gap as acknowledged, not as an error.",
        discussion: """
            For changes that cannot be recovered (the source no longer holds them). The manifest keeps the line with your reason; nothing is deleted.

            Example:
              feedarchive ack-gap orders --from sqlite:eyJj... --until sqlite:eyJj... --reason "outbox pruned before backfill, INC-1234"
            """)

    @OptionGroup var selection: JobSelection

    @Option(help: "The token where the gap starts (as printed by verify).")
    var from: String

    @Option(help: "The token where the gap ends (as printed by verify).")
    var until: String

    @Option(help: "Why the loss is accepted (kept in the manifest).")
    var reason: String

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            let job = try selection.load()
            let fromToken = try ContinuationToken.decode(from, what: "--from")
            let untilToken = try ContinuationToken.decode(until, what: "--until")
            try GapAcknowledgement.record(job: job, from: fromToken, until: untilToken, reason: reason)
            FileHandle.standardError.write(Data("feedarchive: \(job.name): gap acknowledged (\(reason))\n".utf8))
        }
    }
}
