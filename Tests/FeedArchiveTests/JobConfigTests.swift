import FeedArchive
import Foundation
import Testing

@Suite struct JobConfigTests {
    static let valid = """
        name: orders
        source:
          kind: sqlite
          path: shop.db
          table: outbox
        archive:
          root: lake
          compression: lz4
          partition_path: "region={value}"
          time_zone: Europe/Berlin
        batch:
          max_records: 500
          max_bytes: 8MiB
          max_duration: 1h30m
        start: now

        """

    @Test func parsesAValidJob() throws {
        let job = try JobConfig.parse(yaml: Self.valid, file: "/etc/feedarchive/jobs/orders.yaml")
        #expect(job.name == "orders")
        #expect(job.sourceKind == "sqlite")
        #expect(job.archive.root == "/etc/feedarchive/jobs/lake")
        #expect(job.archive.compression == .lz4)
        #expect(job.archive.timeZone == "Europe/Berlin")
        #expect(job.batch.maxRecords == 500)
        #expect(job.batch.maxBytes == 8 << 20)
        #expect(job.batch.maxDuration == 5400)
        #expect(job.start == .now)
        #expect(job.archive.fileMode == 0o640 && job.archive.directoryMode == 0o750)
        #expect(job.archive.workers == nil)  // the source's default
        let explicit = Self.valid.replacingOccurrences(
            of: "  compression: lz4\n", with: "  compression: zstd\n  workers: 0\n")
        #expect(try JobConfig.parse(yaml: explicit, file: "orders.yaml").archive.workers == 0)
    }

    /// Each broken job gives `file:line:column: message` with the place of the mistake.
    @Test(arguments: [
        ("nme: x\n", "j.yaml:1:1", "missing the required key 'name'"),
        ("name: x\nsource: {kind: sqlite}\narchive:\n  root: l\n  colour: red\n", "j.yaml:5:3", "unknown key 'colour'"),
        (
            "name: x\nsource: {kind: sqlite}\narchive:\n  root: l\nbatch:\n  max_records: many\n", "j.yaml:6:16",
            "must be an integer"
        ),
        (
            "name: x\nsource: {kind: sqlite}\narchive:\n  root: l\n  compression: gzip\n", "j.yaml:5:16",
            "zstd, lz4 or none"
        ),
        ("name: x\nsource: [1, 2]\narchive: {root: l}\n", "j.yaml:2:9", "must be a mapping"),
        ("name: x\nsource:\n  kind: sqlite\n   bad: indent\n", "j.yaml:4:", "YAML syntax"),
        ("name: ../evil\nsource: {kind: sqlite}\narchive: {root: l}\n", "j.yaml:1:7", "name must be"),
        (
            "name: x\nsource: {kind: sqlite}\narchive:\n  root: l\nbatch:\n  max_duration: soon\n", "j.yaml:6:17",
            "duration"
        ),
        ("name: x\nsource: {kind: sqlite}\narchive: {root: l, time_zone: Mars/Base}\n", "j.yaml:3:", "time zone"),
        ("", "j.yaml:1:1", "empty"),
    ])
    func errorsCarryLineAndColumn(_ yaml: String, _ place: String, _ message: String) {
        #expect {
            try JobConfig.parse(yaml: yaml, file: "j.yaml")
        } throws: { error in
            guard let error = error as? FeedArchiveError, case .badJobFile(let where_, let text) = error else {
                return false
            }
            return error.exitCode == 78 && where_.hasPrefix(place) && text.contains(message)
        }
    }

    @Test func environmentVariablesAreExpanded() throws {
        setenv("FEEDARCHIVE_TEST_ROOT", "/srv/lake", 1)
        let job = try JobConfig.parse(
            yaml: "name: x\nsource: {kind: sqlite}\narchive: {root: \"${FEEDARCHIVE_TEST_ROOT}\"}\n", file: "j.yaml")
        #expect(job.archive.root == "/srv/lake")
        #expect {
            try JobConfig.parse(
                yaml: "name: x\nsource: {kind: sqlite}\narchive: {root: \"${FEEDARCHIVE_NOT_SET_ANYWHERE}\"}\n",
                file: "j.yaml")
        } throws: { error in
            "\(error)".contains("FEEDARCHIVE_NOT_SET_ANYWHERE is not set") && "\(error)".hasPrefix("j.yaml:3:")
        }
    }

    @Test func sizesAndDurations() {
        #expect(parseByteSize("64MiB") == 64 << 20)
        #expect(parseByteSize("1.5KB") == 1500)
        #expect(parseByteSize("12") == 12)
        #expect(parseByteSize("lots") == nil)
        #expect(parseDuration("1h30m") == 5400)
        #expect(parseDuration("250ms") == 0.25)
        #expect(parseDuration("45") == 45)
        #expect(parseDuration("5 minutes") == nil)
    }

    @Test func pathValuesFromDataAreSanitised() {
        #expect(sanitizePathComponent("../../etc") == "_._.._etc")
        #expect(sanitizePathComponent("/") == "_")
        #expect(sanitizePathComponent("a\u{0}b") == "a_b")
        #expect(sanitizePathComponent("..") == "_.")
        #expect(renderPartitionPath("region={value}/x", value: "../../etc/passwd") == "region=_._.._etc_passwd/x")
        #expect(renderPartitionPath("{value}", value: "..") == "_.")
        #expect(renderPartitionPath("../{value}", value: "eu") == "_./eu")
    }
}
