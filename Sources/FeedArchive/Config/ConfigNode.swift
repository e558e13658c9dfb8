import Foundation
import Yams

/// A YAML node with the file it came from, so every error reads `file:line:column: message`.
public struct ConfigNode: @unchecked Sendable {
    // @unchecked: Yams.Node is an immutable value tree that Yams does not mark Sendable.
    let node: Node
    /// The job file's path, for messages.
    public let file: String

    init(node: Node, file: String) {
        self.node = node
        self.file = file
    }

    /// `file:line:column` of this node.
    public var place: String {
        guard let mark = node.mark else { return file }
        return "\(file):\(mark.line):\(mark.column)"
    }

    public func error(_ message: String) -> FeedArchiveError {
        .badJobFile(place: place, message: message)
    }

    /// Parses YAML text; syntax errors carry their line and column.
    public static func parse(yaml: String, file: String) throws -> ConfigNode {
        do {
            // Scalars are typed by their readers here (with their own errors), never by YAML
            // tags: the basic resolver spares compiling Yams' tag regexes (and ICU's regex
            // engine) in every cron run, about 4% of a run's start-up.
            guard let node = try Yams.compose(yaml: yaml, .basic) else {
                throw FeedArchiveError.badJobFile(place: "\(file):1:1", message: "the job file is empty")
            }
            return ConfigNode(node: node, file: file)
        } catch let error as YamlError {
            throw FeedArchiveError.badJobFile(
                place: Self.place(of: error, file: file), message: Self.message(of: error))
        } catch let error as FeedArchiveError {
            throw error
        } catch {
            throw FeedArchiveError.badJobFile(place: file, message: "\(error)")
        }
    }

    private static func place(of error: YamlError, file: String) -> String {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return "\(file):\(mark.line):\(mark.column)"
        default:
            return "\(file):1:1"
        }
    }

    private static func message(of error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return "YAML syntax: \(problem)"
        default:
            return "YAML: \(error)"
        }
    }

    /// A mapping whose keys are checked against the ones the reader consumes.
    public func mapping(_ what: String) throws -> ConfigMapping {
        guard case .mapping(let mapping) = node else { throw error("\(what) must be a mapping of key: value") }
        return ConfigMapping(mapping: mapping, node: self, what: what)
    }

    /// A scalar string with `${ENV_VAR}` expanded.
    /// The items of a YAML list.
    public func sequence(_ what: String) throws -> [ConfigNode] {
        guard case .sequence(let items) = node else { throw error("\(what) must be a list") }
        return items.map { ConfigNode(node: $0, file: file) }
    }

    public func string(_ what: String) throws -> String {
        guard case .scalar(let scalar) = node else { throw error("\(what) must be a string") }
        return try expandEnvironment(scalar.string, what: what)
    }

    public func int(_ what: String) throws -> Int {
        guard case .scalar = node, let value = Int(try string(what)) else { throw error("\(what) must be an integer") }
        return value
    }

    public func bool(_ what: String) throws -> Bool {
        switch try string(what).lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("\(what) must be true or false")
        }
    }

    /// A size such as `64MiB`, `1GB`, `500000`.
    public func byteSize(_ what: String) throws -> Int64 {
        let text = try string(what).replacingOccurrences(of: " ", with: "")
        guard let value = parseByteSize(text), value > 0 else {
            throw error("\(what) must be a positive size such as 64MiB, 500KB or 1048576, not '\(text)'")
        }
        return value
    }

    /// A duration such as `90s`, `10m`, `1h30m`.
    public func duration(_ what: String) throws -> Double {
        let text = try string(what)
        guard let value = parseDuration(text), value > 0 else {
            throw error("\(what) must be a positive duration such as 30s, 10m or 1h30m, not '\(text)'")
        }
        return value
    }

    private func expandEnvironment(_ text: String, what: String) throws -> String {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = Substring(text)
        while let open = rest.range(of: "${") {
            result += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                throw error("\(what): '${' without a closing '}'")
            }
            let name = String(rest[open.upperBound..<close])
            guard let value = ProcessInfo.processInfo.environment[name] else {
                throw error("\(what): environment variable \(name) is not set")
            }
            result += value
            rest = rest[rest.index(after: close)...]
        }
        return result + rest
    }
}

/// A YAML mapping read key by key; `finish()` rejects the keys nobody asked for.
public final class ConfigMapping {
    private let mapping: Node.Mapping
    public let node: ConfigNode
    private let what: String
    private var consumed: Set<String> = []

    init(mapping: Node.Mapping, node: ConfigNode, what: String) {
        self.mapping = mapping
        self.node = node
        self.what = what
    }

    /// The keys, in the order the file has them.
    public var keys: [String] { mapping.compactMap { $0.key.string } }

    /// The value under `key`, if present.
    public func optional(_ key: String) -> ConfigNode? {
        consumed.insert(key)
        for (name, value) in mapping where name.string == key {
            if case .scalar(let scalar) = value, scalar.style == .plain, scalar.string == "" || scalar.string == "~" {
                return nil
            }
            return ConfigNode(node: value, file: node.file)
        }
        return nil
    }

    /// The value under `key`; missing is an error at the mapping's place.
    public func required(_ key: String) throws -> ConfigNode {
        guard let value = optional(key) else { throw node.error("\(what) is missing the required key '\(key)'") }
        return value
    }

    /// Rejects keys that no reader consumed, naming the closest known key.
    public func finish() throws {
        for (name, _) in mapping {
            let key = name.string ?? "?"
            if !consumed.contains(key) {
                let known = consumed.sorted().joined(separator: ", ")
                throw ConfigNode(node: name, file: node.file).error("unknown key '\(key)' in \(what) (known: \(known))")
            }
        }
    }
}

/// `64MiB` → 67108864. Units: B, KB/MB/GB (1000), KiB/MiB/GiB (1024).
public func parseByteSize(_ text: String) -> Int64? {
    let units: [(String, Int64)] = [
        ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
        ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("B", 1),
    ]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        guard let value = Double(text.dropLast(suffix.count)), value.isFinite else { return nil }
        let bytes = value * Double(scale)
        // Below 2^63 (exactly representable), so the conversion cannot trap.
        guard bytes >= 0, bytes < 9_223_372_036_854_775_808.0 else { return nil }
        return Int64(bytes)
    }
    return Int64(text)
}

/// `1h30m`, `90s`, `250ms`, `10m` → seconds; nil for anything else, or for more than a century.
public func parseDuration(_ text: String) -> Double? {
    var total = 0.0
    var number = ""
    var index = text.startIndex
    var sawUnit = false
    while index < text.endIndex {
        let char = text[index]
        if char.isNumber || char == "." {
            number.append(char)
            index = text.index(after: index)
            continue
        }
        guard let value = Double(number) else { return nil }
        let rest = text[index...]
        if rest.hasPrefix("ms") {
            total += value / 1000
            index = text.index(index, offsetBy: 2)
        } else {
            switch char {
            case "h": total += value * 3600
            case "m": total += value * 60
            case "s": total += value
            case "d": total += value * 86400
            default: return nil
            }
            index = text.index(after: index)
        }
        number = ""
        sawUnit = true
    }
    if !number.isEmpty {
        guard !sawUnit, let value = Double(number) else { return nil }
        total += value
    }
    // At most about a century: every use (deadlines, sleeps in nanoseconds) stays in range.
    guard total.isFinite, total <= 3_200_000_000 else { return nil }
    return total
}
