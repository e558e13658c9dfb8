import Crypto
import Foundation

/// The job's `transform:` section: an ordered list of steps applied to each record's `after`
/// and `before` documents before it is batched, so live runs and backfills write the same
/// bytes.
///
/// ```yaml
/// transform:
///   - drop: [password, card.number]            # remove fields (dotted paths; arrays of objects too)
///   - select: [id, name, address.city]          # keep only these fields
///   - rename: {fullName: name}                  # a field's new name, in the same object
///   - set: {region: eu, source_id: {field: id}} # a constant, or another field's value
///   - redact: {fields: [email, lines.email], key: "${REDACT_KEY}"}  # HMAC-SHA-256 (or key_file)
///   - redact: {fields: [phone], mask: "***"}    # a fixed mask
/// ```
///
/// Steps apply to `after` and to `before` alike (the same personal data is in both), in order;
/// a `null` document is left as it is. A document that is not an object cannot be transformed:
/// the run stops there (exit 65) and nothing after the last checkpoint is committed, so no
/// record passes without its transforms. `hash` identifies the section (the redaction key by a
/// keyed fingerprint, never the key): job.json's shape and every manifest line record it.
///
/// A class, immutable once parsed: the batcher reaches it once per change.
public final class Transform: Sendable, CustomStringConvertible {
    public let steps: [Step]
    /// `sha256:` and the hex digest of the section's canonical text.
    public let hash: String
    /// The steps compiled for applying them.
    let program: TransformProgram
    /// The job has a `partition_by` step: it, not `archive.partition_path`, makes the folders.
    public let partitions: Bool
    /// The job redacts: a dead letter must not hold the documents the redaction was to hide.
    public let redacts: Bool

    init(steps: [Step], hash: String) {
        self.steps = steps
        self.hash = hash
        program = TransformProgram(steps: steps)
        partitions = steps.contains { $0.kind == .partitionBy }
        redacts = steps.contains { $0.kind == .redact }
    }

    /// The folder of a change the steps could not take, from its documents as the source gave
    /// them (fields it lacks are `_`): a batch that opens on it lands among the others.
    public func partition(of line: ArraySlice<UInt8>) -> String? {
        guard let index = steps.firstIndex(where: { $0.kind == .partitionBy }) else { return nil }
        return line.withUnsafeBufferPointer { buffer -> String? in
            guard let ranges = try? EnvelopeFields.locate(buffer) else { return nil }
            let documents = Documents(
                after: buffer[ranges[5].lowerBound] == 0x7B ? .line(ranges[5]) : .null,
                before: buffer[ranges[6].lowerBound] == 0x7B ? .line(ranges[6]) : .null)
            return render(index, buffer: buffer, key: ranges[4], documents)
        }
    }

    /// The envelope with `after` and `before` replaced by `null`: what a dead letter of a job
    /// that redacts keeps (the position and key say which source change it was).
    public static func withheld(_ line: ArraySlice<UInt8>) -> [UInt8] {
        guard let ranges = try? line.withUnsafeBufferPointer({ try EnvelopeFields.split($0) }) else { return [] }
        let base = line.startIndex
        var out: [UInt8] = []
        out.append(contentsOf: line[line.startIndex..<(base + ranges[5].lowerBound)])
        out.append(contentsOf: "null".utf8)
        out.append(contentsOf: line[(base + ranges[5].upperBound)..<(base + ranges[6].lowerBound)])
        out.append(contentsOf: "null".utf8)
        out.append(contentsOf: line[(base + ranges[6].upperBound)..<line.endIndex])
        return out
    }

    public var description: String { "transform \(hash) (\(steps.count) steps)" }

    public struct Step: Sendable {
        public enum Kind: String, Sendable {
            case filter, drop, select, rename, set, redact
            case partitionBy = "partition_by"
        }
        public let kind: Kind
        /// `filter`: the rule's name (for the counts), whether matching records are kept (or
        /// dropped), and the condition.
        public let name: String
        let keep: Bool
        let condition: Condition?
        /// `partition_by`: the folder path's pieces, text or a field (document, path).
        let template: [TemplatePiece]
        let root: PathNode
        /// `set` from another field: the source path of each target leaf.
        let sources: [[String]]
        let hmacKey: RedactionKey?
        let mask: [UInt8]?
        /// The text the hash covers.
        let canonical: String
    }

    enum TemplatePiece: Sendable {
        case text(String)
        case field(document: Int, path: [String])
    }

    /// What a filter tests: the table, the op, or a field of `after`, `before` or `key`.
    enum Condition: Sendable {
        case table(Set<String>)
        case op(Set<String>)
        case field(document: Int, path: [String], test: Test)
    }

    enum Test: Sendable {
        /// JSON values, compared as values (strings by their text, numbers by their value).
        case equals([[UInt8]])
        case exists(Bool)
        case compare(String, Double)
    }

    /// The HMAC key: immutable once made, so shared between threads.
    struct RedactionKey: @unchecked Sendable {
        let key: SymmetricKey
        /// Keyed once: each value's HMAC starts from a copy (no key schedule per value).
        let keyed: HMAC<SHA256>
        /// The same MAC without a heap copy per value: what the engine uses.
        let fast: KeyedSHA256
        init(_ key: SymmetricKey) {
            self.key = key
            keyed = HMAC<SHA256>(key: key)
            fast = KeyedSHA256(key: key.withUnsafeBytes { Array($0) })
        }
    }

    /// A level of the paths a step names.
    final class PathNode: @unchecked Sendable {
        // @unchecked: built once while parsing, never changed after.
        var children: [String: PathNode] = [:]
        var order: [String] = []
        /// The children by their names' UTF-8, in order: matched against names as written.
        var named: [([UInt8], PathNode)] = []
        /// The path ends here (the field itself is dropped, kept, renamed, set or redacted).
        var leaf = false
        var newName: String?
        /// `set`: the JSON text of a constant, or the index of a source path.
        var constant: [UInt8]?
        var source: Int?

        /// The child a field name as written names, if any.
        func matching(_ raw: ArraySlice<UInt8>) -> (String, PathNode)? {
            for (index, entry) in named.enumerated() where JSONScan.nameEquals(raw, entry.0) {
                return (order[index], entry.1)
            }
            return nil
        }

        func child(_ name: String) -> PathNode {
            if let node = children[name] { return node }
            let node = PathNode()
            children[name] = node
            order.append(name)
            named.append((Array(name.utf8), node))
            return node
        }
    }

    // MARK: - Parsing

    public static func parse(_ node: ConfigNode, base: String) throws -> Transform {
        let list = try node.sequence("transform")
        var steps: [Step] = []
        for (number, item) in list.enumerated() {
            let map = try item.mapping("transform[\(number)]")
            guard map.keys.count == 1, let name = map.keys.first, let kind = Step.Kind(rawValue: name) else {
                throw item.error(
                    "transform[\(number)] must be one of filter, drop, select, rename, set, redact, partition_by (one per list item), not \(map.keys.joined(separator: ", "))"
                )
            }
            let body = try map.required(name)
            let what = "transform[\(number)].\(name)"
            let root = PathNode()
            var sources: [[String]] = []
            var canonical = name + ":"
            var hmacKey: SymmetricKey?
            var mask: [UInt8]?
            func path(_ node: ConfigNode, _ text: String) throws -> [String] {
                let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                guard !text.isEmpty, parts.allSatisfy({ !$0.isEmpty }) else {
                    throw node.error("\(what): '\(text)' is not a field path (names joined by '.')")
                }
                return parts
            }
            func leaf(_ parts: [String]) -> PathNode {
                var current = root
                for part in parts { current = current.child(part) }
                current.leaf = true
                return current
            }
            var filterName = ""
            var keep = true
            var condition: Condition?
            var template: [TemplatePiece] = []
            switch kind {
            case .partitionBy:
                let text = try body.string(what)
                template = try Self.template(text, node: body, what: what)
                canonical += text
                if steps.contains(where: { $0.kind == .partitionBy }) {
                    throw item.error("\(what): only one partition_by; its path is the blob's folder")
                }
                steps.append(
                    Step(
                        kind: kind, name: "", keep: true, condition: nil, template: template, root: root, sources: [],
                        hmacKey: nil, mask: nil, canonical: canonical))
                continue
            case .filter:
                let spec = try body.mapping(what)
                filterName = try spec.optional("name")?.string("\(what).name") ?? "filter\(number + 1)"
                let keepNode = spec.optional("keep")
                let dropNode = spec.optional("drop")
                guard (keepNode == nil) != (dropNode == nil), let test = keepNode ?? dropNode else {
                    throw body.error(
                        "\(what) needs exactly one of keep (the records that stay) or drop (the records that go)")
                }
                keep = keepNode != nil
                condition = try Self.condition(test, what: "\(what).\(keep ? "keep" : "drop")")
                canonical += filterName + (keep ? " keep " : " drop ") + "\(condition!)"
                try spec.finish()
                steps.append(
                    Step(
                        kind: kind, name: filterName, keep: keep, condition: condition, template: [], root: root,
                        sources: [], hmacKey: nil, mask: nil, canonical: canonical))
                continue
            case .drop, .select:
                for entry in try body.sequence(what) {
                    let text = try entry.string(what)
                    _ = leaf(try path(entry, text))
                    canonical += text + ","
                }
            case .rename:
                let pairs = try body.mapping(what)
                for from in pairs.keys {
                    let toNode = try pairs.required(from)
                    let to = try toNode.string("\(what).\(from)")
                    guard !to.isEmpty, !to.contains(".") else {
                        throw toNode.error("\(what).\(from): the new name '\(to)' must be one field name (no '.')")
                    }
                    leaf(try path(toNode, from)).newName = to
                    canonical += from + "=" + to + ","
                }
            case .set:
                let pairs = try body.mapping(what)
                for target in pairs.keys {
                    let valueNode = try pairs.required(target)
                    let node = leaf(try path(valueNode, target))
                    if let spec = try? valueNode.mapping("\(what).\(target)") {
                        let fieldNode = try spec.required("field")
                        let from = try fieldNode.string("\(what).\(target).field")
                        try spec.finish()
                        node.source = sources.count
                        sources.append(try path(fieldNode, from))
                        canonical += target + "<-" + from + ","
                    } else {
                        let json = Self.constant(valueNode)
                        node.constant = json
                        canonical += target + "=" + String(decoding: json, as: UTF8.self) + ","
                    }
                }
            case .redact:
                let spec = try body.mapping(what)
                let fieldsNode = try spec.required("fields")
                for entry in try fieldsNode.sequence("\(what).fields") {
                    let text = try entry.string("\(what).fields")
                    _ = leaf(try path(entry, text))
                    canonical += text + ","
                }
                let keyNode = spec.optional("key")
                let fileNode = spec.optional("key_file")
                let maskNode = spec.optional("mask")
                guard [keyNode, fileNode, maskNode].compactMap({ $0 }).count == 1 else {
                    throw body.error(
                        "\(what) needs exactly one of key (HMAC-SHA-256, e.g. \"${REDACT_KEY}\"), key_file, mask")
                }
                if let keyNode {
                    let key = try keyNode.string("\(what).key")
                    guard key.utf8.count >= 16 else {
                        throw keyNode.error("\(what).key is shorter than 16 bytes (is the environment variable set?)")
                    }
                    hmacKey = SymmetricKey(data: Array(key.utf8))
                } else if let fileNode {
                    let file = JobConfig.resolve(try fileNode.string("\(what).key_file"), base: base)
                    guard let data = FileManager.default.contents(atPath: file) else {
                        throw fileNode.error("\(what).key_file: cannot read \(file)")
                    }
                    var bytes = [UInt8](data)
                    while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }
                    guard bytes.count >= 16 else {
                        throw fileNode.error("\(what).key_file: the key is shorter than 16 bytes")
                    }
                    hmacKey = SymmetricKey(data: bytes)
                } else if let maskNode {
                    var out: [UInt8] = []
                    JSONText.appendString(try maskNode.string("\(what).mask"), to: &out)
                    mask = out
                }
                if let hmacKey {
                    // A fingerprint of the key, so that a new key changes the hash; not the key.
                    let print = HMAC<SHA256>.authenticationCode(
                        for: Array("feedarchive transform key".utf8), using: hmacKey)
                    canonical += "hmac:" + print.map { String(format: "%02x", $0) }.joined()
                } else if let mask {
                    canonical += "mask:" + String(decoding: mask, as: UTF8.self)
                }
                try spec.finish()
            }
            if root.children.isEmpty { throw body.error("\(what) names no field") }
            steps.append(
                Step(
                    kind: kind, name: filterName, keep: keep, condition: condition, template: template, root: root,
                    sources: sources, hmacKey: hmacKey.map { RedactionKey($0) }, mask: mask, canonical: canonical))
        }
        let names = steps.filter { $0.kind == .filter }.map(\.name)
        if let twice = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw node.error("transform: two filters are named '\(twice)'; their counts would be one")
        }
        let text = steps.map(\.canonical).joined(separator: "\n")
        let digest = SHA256.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
        return Transform(steps: steps, hash: "sha256:" + digest)
    }

    /// `tenant={after.tenantId}/kind={key.kind}`: text and fields of after, before or key.
    static func template(_ text: String, node: ConfigNode, what: String) throws -> [TemplatePiece] {
        var pieces: [TemplatePiece] = []
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            if open > rest.startIndex { pieces.append(.text(String(rest[..<open]))) }
            guard let close = rest[open...].firstIndex(of: "}") else {
                throw node.error("\(what): '{' without a closing '}' in '\(text)'")
            }
            let field = String(rest[rest.index(after: open)..<close])
            var parts = field.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard let document = ["after", "before", "key"].firstIndex(of: parts.first ?? ""),
                parts.dropFirst().allSatisfy({ !$0.isEmpty }), parts.count > 1 || document == 2
            else {
                throw node.error("\(what): '{\(field)}' must name a field of after, before or key ({after.tenantId})")
            }
            parts.removeFirst()
            pieces.append(.field(document: document, path: parts))
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { pieces.append(.text(String(rest))) }
        guard pieces.contains(where: { if case .field = $0 { true } else { false } }) else {
            throw node.error("\(what): '\(text)' names no field; a fixed folder is archive.partition_path")
        }
        return pieces
    }

    static func condition(_ node: ConfigNode, what: String) throws -> Condition {
        let map = try node.mapping(what)
        func strings(_ key: String) throws -> Set<String>? {
            guard let value = map.optional(key) else { return nil }
            if let list = try? value.sequence("\(what).\(key)") {
                return Set(try list.map { try $0.string("\(what).\(key)") })
            }
            return [try value.string("\(what).\(key)")]
        }
        if let tables = try strings("table") {
            try map.finish()
            return .table(tables)
        }
        if let ops = try strings("op") {
            for op in ops where !["c", "u", "d", "r", "t", "w"].contains(op) {
                throw map.node.error("\(what).op: '\(op)' is not an op (c, u, d, r, t, w)")
            }
            try map.finish()
            return .op(ops)
        }
        guard let fieldNode = map.optional("field") else {
            throw map.node.error("\(what) needs table, op, or field (after.x, before.x or key.x) with a test")
        }
        let text = try fieldNode.string("\(what).field")
        var parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 1, parts.allSatisfy({ !$0.isEmpty }),
            let document = ["after", "before", "key"].firstIndex(of: parts[0])
        else {
            throw fieldNode.error("\(what).field: '\(text)' must start with after., before. or key.")
        }
        parts.removeFirst()
        if parts.isEmpty && document != 2 { throw fieldNode.error("\(what).field: '\(text)' names no field") }
        var tests: [Test] = []
        if let value = map.optional("equals") { tests.append(.equals([constant(value)])) }
        if let value = map.optional("in") { tests.append(.equals(try value.sequence("\(what).in").map(constant))) }
        if let value = map.optional("exists") { tests.append(.exists(try value.bool("\(what).exists"))) }
        for op in ["lt", "le", "gt", "ge"] {
            guard let value = map.optional(op) else { continue }
            let text = try value.string("\(what).\(op)")
            guard let number = Double(text), number.isFinite else {
                throw value.error("\(what).\(op): '\(text)' is not a number")
            }
            tests.append(.compare(op, number))
        }
        guard tests.count == 1 else {
            throw map.node.error("\(what) needs exactly one test: equals, in, exists, lt, le, gt or ge")
        }
        try map.finish()
        return .field(document: document, path: parts, test: tests[0])
    }

    /// A YAML scalar as JSON: integers, decimals, true, false and null as they are, anything
    /// else as a string.
    static func constant(_ node: ConfigNode) -> [UInt8] {
        let text = (try? node.string("value")) ?? ""
        if ["true", "false", "null"].contains(text) || Int64(text) != nil
            || (Double(text).map { $0.isFinite } ?? false && text.first.map { $0 == "-" || $0.isNumber } ?? false)
        {
            return Array(text.utf8)
        }
        var out: [UInt8] = []
        JSONText.appendString(text, to: &out)
        return out
    }

    // MARK: - Applying

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The envelope `line` with its `after` and `before` transformed, written to `out`
    /// (emptied first); or, when a filter drops the record, the index of that step (`out` is
    /// then left empty).
    public func apply(_ line: ArraySlice<UInt8>, into out: inout [UInt8]) throws -> Int? {
        var path: String?
        return try apply(line, into: &out, path: &path)
    }

    /// `after` (0) and `before` (1) between stages.
    struct Documents {
        var after: Document
        var before: Document
        subscript(index: Int) -> Document {
            get { index == 0 ? after : before }
            set {
                if index == 0 { after = newValue } else { before = newValue }
            }
        }
    }

    /// A document between stages: absent (`null`), still in the line, or rewritten.
    enum Document {
        case null
        case line(Range<Int>)
        case owned([UInt8])

        func with<R>(
            _ line: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>, Range<Int>) throws -> R
        ) rethrows -> R? {
            switch self {
            case .null: return nil
            case .line(let range): return try body(line, range)
            case .owned(let bytes): return try bytes.withUnsafeBufferPointer { try body($0, 0..<$0.count) }
            }
        }
    }

    /// `apply`, and the folder path `partition_by` renders (nil without one).
    public func apply(_ line: ArraySlice<UInt8>, into out: inout [UInt8], path: inout String?) throws -> Int? {
        out.removeAll(keepingCapacity: true)
        var scratch: [UInt8] = []
        return try apply(line, appendingTo: &out, path: &path, scratch: &scratch)
    }

    /// `apply`, the line appended to `out`: nothing is appended when a filter drops the record
    /// or a step fails.
    ///
    /// `fields` are where the line holds the envelope's values, when its source kept them
    /// (`FeedPage.fields`); else they are found here.
    func apply(
        _ line: ArraySlice<UInt8>, fields: EnvelopeFields.Ranges? = nil, appendingTo out: inout [UInt8],
        path: inout String?, scratch: inout [UInt8]
    ) throws -> Int? {
        let start = out.count
        do {
            let result = try applying(line, fields: fields, appendingTo: &out, path: &path, scratch: &scratch)
            if result != nil { out.removeSubrange(start...) }
            return result
        } catch {
            out.removeSubrange(start...)
            throw error
        }
    }

    private func applying(
        _ line: ArraySlice<UInt8>, fields: EnvelopeFields.Ranges?, appendingTo out: inout [UInt8],
        path: inout String?, scratch: inout [UInt8]
    ) throws -> Int? {
        path = nil
        var folder: String?
        let result = try line.withUnsafeBufferPointer { buffer -> Int? in
            let ranges: EnvelopeFields.Ranges
            if let fields {
                assert(
                    fields == (try? EnvelopeFields.locate(buffer)),
                    "a source's envelope fields are not where its line holds them: \(String(decoding: buffer, as: UTF8.self))"
                )
                ranges = fields
            } else {
                ranges = try EnvelopeFields.locate(buffer)
            }
            var documents = Documents(after: .line(ranges[5]), before: .line(ranges[6]))
            for index in 0..<2 {
                let range = ranges[5 + index]
                if range.count == 4 && memcmp(buffer.baseAddress! + range.lowerBound, "null", 4) == 0 {
                    documents[index] = .null
                }
            }
            let stages = program.stages
            // The last stage, when it rewrites fields, writes straight into `out`.
            var direct: TransformProgram.Stage?
            if let last = stages.last, case .fields = last { direct = last }
            if let last = stages.last, case .set = last { direct = last }
            for (number, stage) in stages.enumerated() where direct == nil || number < stages.count - 1 {
                switch stage {
                case .filter(let index):
                    let matches: Bool
                    do {
                        matches = try self.matches(index, buffer: buffer, ranges: ranges, documents)
                    } catch let failure as Failure {
                        throw Failure(
                            description: "transform step \(index + 1) (filter \(steps[index].name)): \(failure)")
                    }
                    if matches != steps[index].keep {
                        // Its folder, as far as the documents tell, for a batch that opens on it.
                        if let partition = steps.firstIndex(where: { $0.kind == .partitionBy }) {
                            folder = render(partition, buffer: buffer, key: ranges[4], documents)
                        }
                        return index
                    }
                case .partition(let index):
                    folder = render(index, buffer: buffer, key: ranges[4], documents)
                case .fields, .set:
                    for index in 0..<2 {
                        var next: [UInt8] = []
                        let done: Void? = try documents[index].with(buffer) { text, range in
                            next.reserveCapacity(range.count + 64)
                            try run(stage, document: index, text, range, into: &next, scratch: &scratch)
                        }
                        if done != nil { documents[index] = .owned(next) }
                    }
                }
            }
            for index in 0..<2 {
                out.append(
                    contentsOf: UnsafeBufferPointer(
                        rebasing: buffer[(index == 0 ? 0 : ranges[5].upperBound)..<ranges[5 + index].lowerBound]))
                let written: Void? = try documents[index].with(buffer) { text, range in
                    if let direct {
                        try run(direct, document: index, text, range, into: &out, scratch: &scratch)
                    } else {
                        out.append(contentsOf: UnsafeBufferPointer(rebasing: text[range]))
                    }
                }
                if written == nil { out.append(contentsOf: "null".utf8) }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[ranges[6].upperBound..<buffer.count]))
            return nil
        }
        path = folder
        return result
    }

    /// One stage of field steps over one document (`after` is 0), written to `out`.
    func run(
        _ stage: TransformProgram.Stage, document: Int, _ text: UnsafeBufferPointer<UInt8>, _ range: Range<Int>,
        into out: inout [UInt8], scratch: inout [UInt8]
    ) throws {
        let name = document == 0 ? "after" : "before"
        guard range.count > 0, text[range.lowerBound] == 0x7B else {
            throw Failure(description: "`\(name)` is not a JSON object, so its fields cannot be transformed")
        }
        try program.nodes.withUnsafeBufferPointer { nodes in
            try program.pool.withUnsafeBufferPointer { pool in
                try program.kinds.withUnsafeBufferPointer { kinds in
                    try withUnsafeTemporaryAllocation(of: TransformWalk.State.self, capacity: program.stateCapacity) {
                        states in
                        // The redaction buffer moves into the walk and back, never shared (no copy).
                        let buffer = scratch
                        scratch = []
                        var walk = TransformWalk(
                            nodes: nodes, pool: pool, kinds: kinds, steps: steps, states: states, redacted: buffer)
                        defer { scratch = walk.take() }
                        switch stage {
                        case .fields(let indices):
                            for (position, index) in indices.enumerated() {
                                states[position] = TransformWalk.State(step: Int32(index), node: program.roots[index])
                            }
                            do {
                                try walk.object(text, range.lowerBound, range.upperBound, 0, indices.count, into: &out)
                            } catch let failure as Failure {
                                let numbers = indices.map { "\($0 + 1)" }.joined(separator: ", ")
                                let kinds = indices.map { steps[$0].kind.rawValue }.joined(separator: ", ")
                                throw Failure(
                                    description:
                                        "transform step\(indices.count > 1 ? "s" : "") \(numbers) (\(kinds)) on `\(name)`: \(failure)"
                                )
                            }
                        case .set(let index):
                            let found = steps[index].sources.map { source in
                                Self.locate(source.map { Array($0.utf8) }[...], in: text, range).map { (text, $0) }
                            }
                            do {
                                try walk.set(
                                    text, range.lowerBound, range.upperBound, node: program.roots[index], found: found,
                                    into: &out)
                            } catch let failure as Failure {
                                throw Failure(description: "transform step \(index + 1) (set) on `\(name)`: \(failure)")
                            }
                        case .filter, .partition:
                            break
                        }
                    }
                }
            }
        }
    }

    /// The value a filter or folder names: `key` itself (an empty path), a field of `key`, or
    /// a field of `after` (0) or `before` (1); nil when absent.
    func lookup(
        document: Int, path: ArraySlice<[UInt8]>, buffer: UnsafeBufferPointer<UInt8>, key: Range<Int>,
        _ documents: Documents, _ body: (UnsafeBufferPointer<UInt8>, Range<Int>?) throws -> Void
    ) rethrows {
        if document == 2 {
            if path.isEmpty { return try body(buffer, key) }
            return try body(buffer, buffer[key.lowerBound] == 0x7B ? Self.locate(path, in: buffer, key) : nil)
        }
        let absent: Void? = try documents[document].with(buffer) { text, range in
            try body(text, Self.locate(path, in: text, range))
        }
        if absent == nil { try body(buffer, nil) }
    }

    /// The folder path: each field's value (a string's text, any other value's JSON text; `_`
    /// when absent or null), sanitised as partition paths are.
    func render(_ index: Int, buffer: UnsafeBufferPointer<UInt8>, key: Range<Int>, _ documents: Documents) -> String? {
        var text = ""
        for (number, piece) in steps[index].template.enumerated() {
            switch piece {
            case .text(let literal): text += literal
            case .field(let document, _):
                var piece = "_"
                lookup(
                    document: document, path: program.paths[index][number][...], buffer: buffer, key: key, documents
                ) { text, range in
                    guard let range else { return }
                    let value = ArraySlice(UnsafeBufferPointer(rebasing: text[range]))
                    if !value.elementsEqual("null".utf8) {
                        piece =
                            value.first == 0x22
                            ? (JSONScan.string(value) ?? "_") : String(decoding: value, as: UTF8.self)
                    }
                }
                // A value never makes folders of its own.
                text += sanitizePathComponent(piece.replacingOccurrences(of: "/", with: "_"))
            }
        }
        return renderPartitionPath(text, value: nil)
    }

    /// Whether a record meets a filter's condition. A numeric comparison on a value that is not
    /// a number is a failure, not a "no".
    func matches(
        _ index: Int, buffer: UnsafeBufferPointer<UInt8>, ranges: EnvelopeFields.Ranges, _ documents: Documents
    ) throws -> Bool {
        switch steps[index].condition! {
        case .op(let ops):
            return ops.contains(JSONScan.string(ArraySlice(UnsafeBufferPointer(rebasing: buffer[ranges[2]]))) ?? "")
        case .table(let tables):
            guard let range = Self.locate(Self.tablePath[...], in: buffer, ranges[7]),
                let table = JSONScan.string(ArraySlice(UnsafeBufferPointer(rebasing: buffer[range])))
            else { return false }
            return tables.contains(table) || tables.contains { table.hasSuffix("." + $0) }
        case .field(let document, let path, let test):
            if document < 2, case .owned(let bytes) = documents[document], bytes.first != 0x7B {
                throw Failure(
                    description:
                        "`\(document == 0 ? "after" : "before")` is not a JSON object, so it has no field \(path.joined(separator: "."))"
                )
            }
            if document < 2, case .line(let range) = documents[document], buffer[range.lowerBound] != 0x7B {
                throw Failure(
                    description:
                        "`\(document == 0 ? "after" : "before")` is not a JSON object, so it has no field \(path.joined(separator: "."))"
                )
            }
            var result = false
            try lookup(
                document: document, path: program.paths[index][0][...], buffer: buffer, key: ranges[4], documents
            ) { text, range in
                let value = range.map { UnsafeBufferPointer(rebasing: text[$0]) }
                switch test {
                case .exists(let wanted):
                    result = (value != nil) == wanted
                case .equals(let candidates):
                    guard let value else { return }
                    result = candidates.contains { Self.jsonEqual($0, value) }
                case .compare(let op, let bound):
                    guard let value else { return }
                    guard let first = value.first, first == 0x2D || (0x30...0x39).contains(first),
                        let number = Double(String(decoding: value, as: UTF8.self))
                    else {
                        throw Failure(
                            description:
                                "\(path.joined(separator: ".")) is \(String(decoding: value.prefix(40), as: UTF8.self)), not a number to compare"
                        )
                    }
                    switch op {
                    case "lt": result = number < bound
                    case "le": result = number <= bound
                    case "gt": result = number > bound
                    default: result = number >= bound
                    }
                }
            }
            return result
        }
    }

    static let tablePath: [[UInt8]] = [Array("table".utf8)]

    /// Two JSON values equal as values: strings by their text, numbers by their value, the
    /// rest by their text.
    static func jsonEqual(_ a: [UInt8], _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        if a.first == 0x22 || b.first == 0x22 {
            guard a.first == b.first else { return false }
            // The same bytes are the same string, and different ASCII without escapes a different
            // one; else the texts are compared with escapes decoded, as strings (canonically
            // equivalent Unicode is equal).
            if a.count == b.count
                && a.withUnsafeBufferPointer({ memcmp($0.baseAddress!, b.baseAddress!, a.count) == 0 })
            {
                return true
            }
            guard a.contains(where: { $0 == 0x5C || $0 >= 0x80 }) || b.contains(where: { $0 == 0x5C || $0 >= 0x80 })
            else { return false }
            return JSONScan.string(a[...]) == JSONScan.string(ArraySlice(b))
        }
        if let x = Double(String(decoding: a, as: UTF8.self)), let y = Double(String(decoding: b, as: UTF8.self)) {
            return x == y
        }
        return a.elementsEqual(b)
    }
}
