import ArgumentParser
import FeedArchive
import Foundation

/// Turns command-line job names into job files; reports errors with exit codes.
enum Frontend {
    /// A job argument is a path to a YAML file, or a name looked up as `<jobs-dir>/<name>.yaml`.
    static func jobPath(_ argument: String, jobsDirectory: String) throws -> String {
        if argument.hasSuffix(".yaml") || argument.hasSuffix(".yml") || argument.contains("/") {
            guard FileManager.default.fileExists(atPath: argument) else {
                throw FeedArchiveError.badJobFile(place: argument, message: "no such job file")
            }
            return argument
        }
        for suffix in [".yaml", ".yml"] {
            let candidate = jobsDirectory + "/" + argument + suffix
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        throw FeedArchiveError.usage(
            "no job named '\(argument)': looked for \(jobsDirectory)/\(argument).yaml (pass a path to use another file)"
        )
    }

    /// Every job file in the jobs folder (`run --all`).
    static func allJobs(jobsDirectory: String) throws -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: jobsDirectory)) ?? []
        let files = names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        if files.isEmpty { throw FeedArchiveError.usage("no job files in \(jobsDirectory)") }
        return files.map { jobsDirectory + "/" + $0 }
    }

    static func loadJob(_ argument: String, jobsDirectory: String) throws -> JobConfig {
        try JobConfig.load(path: jobPath(argument, jobsDirectory: jobsDirectory))
    }

    /// The one way a command ends on an error: the message on stderr, after the job's name
    /// (through the run log for `run` and `backfill`), then the exit code the error carries.
    /// An `ExitCode` the body throws (status and verify's 1) passes through.
    static func run<T>(job: String?, log: RunLog? = nil, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let exit as ExitCode {
            throw exit
        } catch {
            if let log { log.failure(job: job, error: error) } else { printError(error, job: job) }
            throw ExitCode(FeedArchiveError.exitCode(for: error))
        }
    }

    private static func printError(_ error: any Error, job: String?) {
        let prefix = job.map { "feedarchive: \($0): " } ?? "feedarchive: "
        FileHandle.standardError.write(Data((prefix + "\(error)\n").utf8))
    }

    static var stderrIsTerminal: Bool { isatty(2) == 1 }
}

/// Human sizes: `12.3 MB`.
func humanBytes(_ bytes: Int64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

/// The job a single-job command works on: a name looked up in `--jobs-dir`, or a job file.
struct JobSelection: ParsableArguments {
    @Argument(help: "Job name (looked up in --jobs-dir) or path to a job file.")
    var job: String

    @Option(help: "Folder where job names are looked up.")
    var jobsDir = "jobs"

    func load() throws -> JobConfig { try Frontend.loadJob(job, jobsDirectory: jobsDir) }
}
