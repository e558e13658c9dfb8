import ArgumentParser
import FeedArchive
import Foundation

struct EpochCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "epoch",
        abstract: "Start a new lineage when continuity with the source cannot be proven.",
        discussion: """
            feedarchive refuses to continue when the source is another one than job.json records, or its sequence went backwards. When a person has checked that this is expected (the database was restored, the table rebuilt), this command records the new source identity and an `epoch` manifest line with the reason, and moves the checkpoint to --from. Nothing already archived is changed.

            Examples:
              feedarchive epoch quickstart --from beginning --reason "restored shop.db from backup"
              feedarchive epoch quickstart --from now --reason "outbox table recreated"
            """)

    @OptionGroup var selection: JobSelection

    @Option(help: "Where the new lineage starts: beginning, now, an RFC 3339 time or a token.")
    var from: String

    @Option(help: "Why (kept in the manifest).")
    var reason: String

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            let job = try selection.load()
            let token = try await Epoch.start(
                job: job, from: StartSpec.parse(from), reason: reason, source: .registry(.all))
            FileHandle.standardError.write(
                Data("feedarchive: \(job.name): new epoch from \(from) (\(reason)); checkpoint \(token.encoded)\n".utf8)
            )
        }
    }
}
