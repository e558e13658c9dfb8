import ArgumentParser
import FeedArchive
import Foundation

struct CatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cat",
        abstract: "Print a job's archived changes in feed order, one JSON envelope per line.",
        discussion: """
            Reads only the archive (the source is not needed). --from/--until take an RFC 3339 time (filters on each change's ts) or a token printed by feedarchive (a blob boundary).

            Examples:
              feedarchive cat quickstart | head
              feedarchive cat quickstart --from 2026-11-23T00:00:00Z --until 2026-11-23T06:00:00Z
              feedarchive cat quickstart --rejected
            """)

    @OptionGroup var selection: JobSelection

    @Option(help: "Start after this token, or at this time.")
    var from: String?

    @Option(help: "Stop at this token, or before this time.")
    var until: String?

    @Flag(
        help:
            "Print the dead letters instead: the changes the job's transform could not take, each with the reason and its envelope as the source gave it."
    )
    var rejected = false

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            let reader = try ArchiveReader(job: try selection.load())
            if rejected {
                try reader.readRejected { FileHandle.standardOutput.write(Data($0)) }
                return
            }
            try reader.read(from: from.map(ArchiveReader.Bound.init), until: until.map(ArchiveReader.Bound.init)) {
                chunk in
                FileHandle.standardOutput.write(Data(chunk))
            }
        }
    }
}
