import ArgumentParser
import FeedArchive
import Foundation

struct CatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cat",
        abstract: "Print a job's archived changes in feed order, one JSON envelope per line.",
        discussion: """
            Reads only the archive (the source is not needed). --from/--until take an RFC 3339
            time (filters on each change's ts) or a token printed by feedarchive (a blob boundary).

            Examples:
              feedarchive cat quickstart | head
              feedarchive cat quickstart --from 2026-11-23T00:00:00Z --until 2026-11-23T06:00:00Z
            """)

    @OptionGroup var selection: JobSelection
    var job: String { selection.job }

    @Option(help: "Start after this token, or at this time.")
    var from: String?

    @Option(help: "Stop at this token, or before this time.")
    var until: String?

    func run() async throws {
        try await Frontend.run(job: job) {
            try emit()
        }
    }

    private func emit() throws {
        let config = try selection.load()
        let archive = JobArchive(job: config)
        if let damage = try archive.load(), !damage.isTornTail {
            throw FeedArchiveError.data(path: "\(damage.file):\(damage.line)", message: damage.message)
        }
        let entries = archive.manifest.entries
        var startIndex = 0
        var endIndex = entries.count
        var fromTime: Int64?
        var untilTime: Int64?
        func boundary(_ text: String, _ flag: String) throws -> Int {
            guard let index = entries.firstIndex(where: { $0.toToken == text }) else {
                throw FeedArchiveError.usage("\(flag) \(text.prefix(40))…: not a time, and not a token at a blob boundary of this archive")
            }
            return index
        }
        if let from {
            if let date = parseRFC3339(from) { fromTime = Int64(date.timeIntervalSince1970 * 1_000_000) } else { startIndex = try boundary(from, "--from") + 1 }
        }
        if let until {
            if let date = parseRFC3339(until) { untilTime = Int64(date.timeIntervalSince1970 * 1_000_000) } else { endIndex = try boundary(until, "--until") + 1 }
        }
        let out = FileHandle.standardOutput
        var buffer: [UInt8] = []
        for entry in entries[min(startIndex, endIndex)..<endIndex] where entry.kind == .blob && entry.lineage == "live" {
            guard let path = entry.path, let compression = Compression.of(path: path) else { continue }
            let absolute = archive.layout.absolute(path)
            guard let bytes = try archive.fs.read(absolute) else {
                throw FeedArchiveError.data(path: absolute, message: "the blob named by manifest seq \(entry.seq) is missing")
            }
            let decoded: [UInt8]
            do {
                decoded = try compression.makeDecoder().decodeAll(bytes)
            } catch {
                throw FeedArchiveError.data(path: absolute, message: "cannot decode: \(error)")
            }
            if fromTime == nil && untilTime == nil {
                buffer.append(contentsOf: decoded)
            } else {
                for line in decoded.split(separator: 0x0A) {
                    let ts = timestamp(in: line)
                    if let fromTime, let ts, ts < fromTime { continue }
                    if let untilTime, let ts, ts >= untilTime { continue }
                    buffer.append(contentsOf: line)
                    buffer.append(0x0A)
                }
            }
            if buffer.count > 1 << 20 {
                out.write(Data(buffer))
                buffer.removeAll(keepingCapacity: true)
            }
        }
        out.write(Data(buffer))
    }

    /// The envelope's `ts`, found without decoding the whole line.
    private func timestamp(in line: ArraySlice<UInt8>) -> Int64? {
        let key = Array(#","ts":""#.utf8)
        guard let start = line.firstRange(of: key)?.upperBound, let end = line[start...].firstIndex(of: 0x22) else { return nil }
        return Array(line[start..<end]).withUnsafeBufferPointer { parseTimestampMicros($0) }
    }
}
