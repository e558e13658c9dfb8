import ArgumentParser
import FeedArchive
import Foundation

struct SetupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "setup",
        abstract: "Create what a job's source needs (PostgreSQL: the publication and the replication slot).",
        discussion: """
            Idempotent: what exists is kept, listed tables missing from the publication are added. For a PostgreSQL job, the publication is created FOR TABLE source.tables and the slot with the pgoutput plugin; the server needs wal_level = logical. A job with `create: true` does the same on its first run. SQLite jobs need no setup.

            Examples:
              feedarchive setup orders
              feedarchive setup jobs/orders.yaml
            """)

    @OptionGroup var selection: JobSelection

    func run() async throws {
        try await Frontend.run(job: selection.job) {
            let config = try selection.load()
            if let lines = try await SourceRegistry.all.factory(for: config).setup(job: config) {
                for line in lines { print("\(config.name): \(line)") }
            } else {
                print("\(config.name): a \(config.sourceKind) source needs no setup")
            }
        }
    }
}
