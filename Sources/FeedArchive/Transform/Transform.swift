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
public struct Transform: Sendable, CustomStringConvertible {
    public let steps: [Step]
    /// `sha256:` and the hex digest of the section's canonical text.
    public let hash: String

    public var description: String { "transform \(hash) (\(steps.count) steps)" }

    public struct Step: Sendable {
        public enum Kind: String, Sendable { case drop, select, rename, set, redact }
        public let kind: Kind
        let root: PathNode
        /// `set` from another field: the source path of each target leaf.
        let sources: [[String]]
        let hmacKey: RedactionKey?
        let mask: [UInt8]?
        /// The text the hash covers.
        let canonical: String
    }

    /// The HMAC key: immutable once made, so shared between threads.
    struct RedactionKey: @unchecked Sendable {
        let key: SymmetricKey
    }

    /// A level of the paths a step names.
    final class PathNode: @unchecked Sendable {
        // @unchecked: built once while parsing, never changed after.
        var children: [String: PathNode] = [:]
        var order: [String] = []
        /// The path ends here (the field itself is dropped, kept, renamed, set or redacted).
        var leaf = false
        var newName: String?
        /// `set`: the JSON text of a constant, or the index of a source path.
        var constant: [UInt8]?
        var source: Int?

        func child(_ name: String) -> PathNode {
            if let node = children[name] { return node }
            let node = PathNode()
            children[name] = node
            order.append(name)
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
                    "transform[\(number)] must be one of drop, select, rename, set, redact (one per list item), not \(map.keys.joined(separator: ", "))"
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
            switch kind {
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
                    kind: kind, root: root, sources: sources, hmacKey: hmacKey.map(RedactionKey.init), mask: mask,
                    canonical: canonical))
        }
        let text = steps.map(\.canonical).joined(separator: "\n")
        let digest = SHA256.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
        return Transform(steps: steps, hash: "sha256:" + digest)
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
    /// (emptied first).
    public func apply(_ line: ArraySlice<UInt8>, into out: inout [UInt8]) throws {
        out.removeAll(keepingCapacity: true)
        let ranges = try line.withUnsafeBufferPointer { try EnvelopeFields.split($0) }
        let base = line.startIndex
        let after = (base + ranges[5].lowerBound)..<(base + ranges[5].upperBound)
        let before = (base + ranges[6].lowerBound)..<(base + ranges[6].upperBound)
        out.append(contentsOf: line[line.startIndex..<after.lowerBound])
        try document(line[after], name: "after", into: &out)
        out.append(contentsOf: line[after.upperBound..<before.lowerBound])
        try document(line[before], name: "before", into: &out)
        out.append(contentsOf: line[before.upperBound..<line.endIndex])
    }

    func document(_ value: ArraySlice<UInt8>, name: String, into out: inout [UInt8]) throws {
        if value.elementsEqual("null".utf8) {
            out.append(contentsOf: value)
            return
        }
        guard value.first == 0x7B else {
            throw Failure(description: "`\(name)` is not a JSON object, so its fields cannot be transformed")
        }
        var current = Array(value)
        var next: [UInt8] = []
        for (number, step) in steps.enumerated() {
            next.removeAll(keepingCapacity: true)
            let found = step.sources.map { Self.value(at: $0[...], in: current[...]) }
            do {
                try rewrite(current[...], node: step.root, step: step, found: found, into: &next)
            } catch let failure as Failure {
                throw Failure(
                    description: "transform step \(number + 1) (\(step.kind.rawValue)) on `\(name)`: \(failure)")
            }
            swap(&current, &next)
        }
        out.append(contentsOf: current)
    }

    /// The value at `path` in an object (first match; through arrays, the first element that
    /// has it), nil when absent.
    static func value(at path: ArraySlice<String>, in object: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard let name = path.first, let fields = JSONScan.fields(object),
            let value = fields.last(where: { $0.name == name })?.value
        else { return nil }
        if path.count == 1 { return value }
        if value.first == 0x7B { return Self.value(at: path.dropFirst(), in: value) }
        return nil
    }

    /// One step over one object: fields copied as they are unless the step names them.
    func rewrite(
        _ object: ArraySlice<UInt8>, node: PathNode, step: Step, found: [ArraySlice<UInt8>?], into out: inout [UInt8]
    ) throws {
        guard let fields = JSONScan.fields(object) else {
            throw Failure(description: "a malformed object")
        }
        out.append(0x7B)
        var first = true
        var seen = Set<String>()
        func field(_ name: String) {
            if !first { out.append(0x2C) }
            first = false
            JSONText.appendString(name, to: &out)
            out.append(0x3A)
        }
        for (name, value) in fields {
            guard let child = node.children[name] else {
                if step.kind == .select { continue }  // not named: not kept
                field(name)
                out.append(contentsOf: value)
                continue
            }
            seen.insert(name)
            if child.leaf {
                switch step.kind {
                case .drop: continue
                case .select:
                    field(name)
                    out.append(contentsOf: value)
                case .rename:
                    field(child.newName ?? name)
                    out.append(contentsOf: value)
                case .set:
                    field(name)
                    setValue(child, found: found, into: &out)
                case .redact:
                    field(name)
                    redact(value, step: step, into: &out)
                }
            } else {
                field(name)
                try descend(value, node: child, step: step, found: found, into: &out)
            }
        }
        if step.kind == .set {
            // Fields the document does not have yet.
            for name in node.order where !seen.contains(name) {
                guard let child = node.children[name] else { continue }
                field(name)
                if child.leaf {
                    setValue(child, found: found, into: &out)
                } else {
                    try rewrite(Array("{}".utf8)[...], node: child, step: step, found: found, into: &out)
                }
            }
        }
        out.append(0x7D)
    }

    /// Into a nested object, or into each object of an array; other values are left as they
    /// are (a path through them names nothing).
    func descend(
        _ value: ArraySlice<UInt8>, node: PathNode, step: Step, found: [ArraySlice<UInt8>?], into out: inout [UInt8]
    ) throws {
        var start = value.startIndex
        while start < value.endIndex && JSONScan.isSpace(value[start]) { start += 1 }
        guard start < value.endIndex else {
            out.append(contentsOf: value)
            return
        }
        if value[start] == 0x7B {
            try rewrite(value, node: node, step: step, found: found, into: &out)
        } else if value[start] == 0x5B {
            guard let elements = JSONScan.elements(value) else { throw Failure(description: "a malformed array") }
            out.append(0x5B)
            for (index, element) in elements.enumerated() {
                if index > 0 { out.append(0x2C) }
                if element.first == 0x7B {
                    try rewrite(element, node: node, step: step, found: found, into: &out)
                } else {
                    out.append(contentsOf: element)
                }
            }
            out.append(0x5D)
        } else {
            out.append(contentsOf: value)
        }
    }

    func setValue(_ node: PathNode, found: [ArraySlice<UInt8>?], into out: inout [UInt8]) {
        if let constant = node.constant {
            out.append(contentsOf: constant)
        } else if let source = node.source, let value = found[source] {
            out.append(contentsOf: value)
        } else {
            out.append(contentsOf: "null".utf8)
        }
    }

    /// The HMAC-SHA-256 of the value (a string's text, any other value's JSON text) as 64 hex
    /// digits, or the mask. `null` stays `null`: there is nothing to hide.
    func redact(_ value: ArraySlice<UInt8>, step: Step, into out: inout [UInt8]) {
        if value.elementsEqual("null".utf8) {
            out.append(contentsOf: value)
            return
        }
        if let mask = step.mask {
            out.append(contentsOf: mask)
            return
        }
        guard let key = step.hmacKey else { return }
        let input: [UInt8] = value.first == 0x22 ? Array((JSONScan.string(value) ?? "").utf8) : Array(value)
        let code = HMAC<SHA256>.authenticationCode(for: input, using: key.key)
        out.append(0x22)
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        for byte in code {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        out.append(0x22)
    }
}
