import Crypto
import Foundation

@testable import FeedArchive

/// The transform steps as a reference model: each step a pass of its own over a document, as
/// the steps are defined. The engine fuses runs of field steps into one walk; the property
/// test compares the two on random documents and step lists.
extension Transform {
    /// `apply`, and the folder path `partition_by` renders (nil without one).
    func referenceApply(_ line: ArraySlice<UInt8>, into out: inout [UInt8], path: inout String?) throws -> Int? {
        out.removeAll(keepingCapacity: true)
        path = nil
        let ranges = try line.withUnsafeBufferPointer { try EnvelopeFields.split($0) }
        let base = line.startIndex
        func field(_ index: Int) -> ArraySlice<UInt8> {
            line[(base + ranges[index].lowerBound)..<(base + ranges[index].upperBound)]
        }
        var documents: [[UInt8]?] = [Array(field(5)), Array(field(6))]
        for name in [0, 1] where documents[name].map({ $0.elementsEqual("null".utf8) }) == true {
            documents[name] = nil
        }
        for (number, step) in steps.enumerated() {
            if step.kind == .partitionBy {
                path = Self.referenceRender(step.template, key: field(4), documents)
                continue
            }
            if step.kind == .filter {
                let matches: Bool
                do {
                    matches = try Self.referenceMatches(
                        step.condition!, op: field(2), key: field(4), source: field(7), documents)
                } catch let failure as Failure {
                    throw Failure(description: "transform step \(number + 1) (filter \(step.name)): \(failure)")
                }
                if matches != step.keep {
                    // Its folder, as far as the documents tell, for a batch that opens on it.
                    if let partition = steps.first(where: { $0.kind == .partitionBy }) {
                        path = Self.referenceRender(partition.template, key: field(4), documents)
                    }
                    return number
                }
                continue
            }
            for index in [0, 1] {
                guard let current = documents[index] else { continue }
                let name = index == 0 ? "after" : "before"
                guard current.first == 0x7B else {
                    throw Failure(description: "`\(name)` is not a JSON object, so its fields cannot be transformed")
                }
                var next: [UInt8] = []
                next.reserveCapacity(current.count + 64)
                let found = step.sources.map { Self.referenceValue(at: $0[...], in: current[...]) }
                do {
                    try referenceRewrite(current[...], node: step.root, step: step, found: found, into: &next)
                } catch let failure as Failure {
                    throw Failure(
                        description: "transform step \(number + 1) (\(step.kind.rawValue)) on `\(name)`: \(failure)")
                }
                documents[index] = next
            }
        }
        out.append(contentsOf: line[line.startIndex..<(base + ranges[5].lowerBound)])
        out.append(contentsOf: documents[0] ?? Array("null".utf8))
        out.append(contentsOf: line[(base + ranges[5].upperBound)..<(base + ranges[6].lowerBound)])
        out.append(contentsOf: documents[1] ?? Array("null".utf8))
        out.append(contentsOf: line[(base + ranges[6].upperBound)..<line.endIndex])
        return nil
    }

    /// The folder path: each field's value (a string's text, any other value's JSON text; `_`
    /// when absent or null), sanitised as partition paths are.
    static func referenceRender(_ template: [TemplatePiece], key: ArraySlice<UInt8>, _ documents: [[UInt8]?]) -> String?
    {
        var text = ""
        for piece in template {
            switch piece {
            case .text(let literal): text += literal
            case .field(let document, let path):
                let value: ArraySlice<UInt8>?
                if document == 2 {
                    value = path.isEmpty ? key : (key.first == 0x7B ? Self.referenceValue(at: path[...], in: key) : nil)
                } else {
                    value = documents[document].flatMap { Self.referenceValue(at: path[...], in: $0[...]) }
                }
                var piece = "_"
                if let value, !value.elementsEqual("null".utf8) {
                    piece =
                        value.first == 0x22 ? (JSONScan.string(value) ?? "_") : String(decoding: value, as: UTF8.self)
                }
                // A value never makes folders of its own.
                text += sanitizePathComponent(piece.replacingOccurrences(of: "/", with: "_"))
            }
        }
        return renderPartitionPath(text, value: nil)
    }

    /// Whether a record meets a filter's condition. A numeric comparison on a value that is not
    /// a number is a failure, not a "no".
    static func referenceMatches(
        _ condition: Condition, op: ArraySlice<UInt8>, key: ArraySlice<UInt8>, source: ArraySlice<UInt8>,
        _ documents: [[UInt8]?]
    ) throws -> Bool {
        switch condition {
        case .op(let ops):
            return ops.contains(JSONScan.string(op) ?? "")
        case .table(let tables):
            guard let table = JSONScan.field("table", in: source).flatMap({ JSONScan.string($0) }) else { return false }
            return tables.contains(table) || tables.contains { table.hasSuffix("." + $0) }
        case .field(let document, let path, let test):
            let value: ArraySlice<UInt8>?
            if document == 2 {
                value = path.isEmpty ? key : (key.first == 0x7B ? Self.referenceValue(at: path[...], in: key) : nil)
            } else {
                if let current = documents[document], current.first != 0x7B {
                    throw Failure(
                        description:
                            "`\(document == 0 ? "after" : "before")` is not a JSON object, so it has no field \(path.joined(separator: "."))"
                    )
                }
                value = documents[document].flatMap { Self.referenceValue(at: path[...], in: $0[...]) }
            }
            switch test {
            case .exists(let wanted):
                return (value != nil) == wanted
            case .equals(let candidates):
                guard let value else { return false }
                return candidates.contains { Self.referenceJSONEqual($0[...], value) }
            case .compare(let op, let bound):
                guard let value else { return false }
                guard let first = value.first, first == 0x2D || (0x30...0x39).contains(first),
                    let number = Double(String(decoding: value, as: UTF8.self))
                else {
                    throw Failure(
                        description:
                            "\(path.joined(separator: ".")) is \(String(decoding: value.prefix(40), as: UTF8.self)), not a number to compare"
                    )
                }
                switch op {
                case "lt": return number < bound
                case "le": return number <= bound
                case "gt": return number > bound
                default: return number >= bound
                }
            }
        }
    }

    /// Two JSON values equal as values: strings by their text, numbers by their value, the
    /// rest by their text.
    static func referenceJSONEqual(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Bool {
        if a.first == 0x22 || b.first == 0x22 {
            return a.first == b.first && JSONScan.string(a) == JSONScan.string(b)
        }
        if let x = Double(String(decoding: a, as: UTF8.self)), let y = Double(String(decoding: b, as: UTF8.self)) {
            return x == y
        }
        return a.elementsEqual(b)
    }

    /// The value at `path` in an object (first match; through arrays, the first element that
    /// has it), nil when absent.
    static func referenceValue(at path: ArraySlice<String>, in object: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard let name = path.first else { return nil }
        let wanted = Array(name.utf8)
        var found: ArraySlice<UInt8>?
        JSONScan.forEachField(object) { raw, value in
            if JSONScan.nameEquals(raw, wanted) { found = value }  // the last of equal names wins
        }
        guard let value = found else { return nil }
        if path.count == 1 { return value }
        if value.first == 0x7B { return Self.referenceValue(at: path.dropFirst(), in: value) }
        return nil
    }

    /// One step over one object: fields copied as they are unless the step names them.
    func referenceRewrite(
        _ object: ArraySlice<UInt8>, node: PathNode, step: Step, found: [ArraySlice<UInt8>?], into out: inout [UInt8]
    ) throws {
        out.append(0x7B)
        var first = true
        var seen: Set<String> = []
        func field(raw: ArraySlice<UInt8>) {
            if !first { out.append(0x2C) }
            first = false
            out.append(0x22)
            out.append(contentsOf: raw)
            out.append(0x22)
            out.append(0x3A)
        }
        func field(_ name: String) {
            if !first { out.append(0x2C) }
            first = false
            JSONText.appendString(name, to: &out)
            out.append(0x3A)
        }
        let wellFormed = try JSONScan.forEachField(object) { raw, value in
            guard let (name, child) = node.matching(raw) else {
                if step.kind == .select { return }  // not named: not kept
                field(raw: raw)
                out.append(contentsOf: value)
                return
            }
            if step.kind == .set { seen.insert(name) }
            if child.leaf {
                switch step.kind {
                case .filter, .partitionBy, .drop: return  // filters and partition_by name no fields
                case .select:
                    field(raw: raw)
                    out.append(contentsOf: value)
                case .rename:
                    field(child.newName ?? name)
                    out.append(contentsOf: value)
                case .set:
                    field(raw: raw)
                    referenceSetValue(child, found: found, into: &out)
                case .redact:
                    field(raw: raw)
                    referenceRedact(value, step: step, into: &out)
                }
            } else {
                field(raw: raw)
                try referenceDescend(value, node: child, step: step, found: found, into: &out)
            }
        }
        guard wellFormed else { throw Failure(description: "a malformed object") }
        if step.kind == .set {
            // Fields the document does not have yet.
            for name in node.order where !seen.contains(name) {
                guard let child = node.children[name] else { continue }
                field(name)
                if child.leaf {
                    referenceSetValue(child, found: found, into: &out)
                } else {
                    try referenceRewrite(Array("{}".utf8)[...], node: child, step: step, found: found, into: &out)
                }
            }
        }
        out.append(0x7D)
    }

    /// Into a nested object, or into each object of an array; other values are left as they
    /// are (a path through them names nothing).
    func referenceDescend(
        _ value: ArraySlice<UInt8>, node: PathNode, step: Step, found: [ArraySlice<UInt8>?], into out: inout [UInt8]
    ) throws {
        var start = value.startIndex
        while start < value.endIndex && JSONScan.isSpace(value[start]) { start += 1 }
        guard start < value.endIndex else {
            out.append(contentsOf: value)
            return
        }
        if value[start] == 0x7B {
            try referenceRewrite(value, node: node, step: step, found: found, into: &out)
        } else if value[start] == 0x5B {
            guard let elements = JSONScan.elements(value) else { throw Failure(description: "a malformed array") }
            out.append(0x5B)
            for (index, element) in elements.enumerated() {
                if index > 0 { out.append(0x2C) }
                if element.first == 0x7B {
                    try referenceRewrite(element, node: node, step: step, found: found, into: &out)
                } else {
                    out.append(contentsOf: element)
                }
            }
            out.append(0x5D)
        } else {
            out.append(contentsOf: value)
        }
    }

    func referenceSetValue(_ node: PathNode, found: [ArraySlice<UInt8>?], into out: inout [UInt8]) {
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
    func referenceRedact(_ value: ArraySlice<UInt8>, step: Step, into out: inout [UInt8]) {
        if value.elementsEqual("null".utf8) {
            out.append(contentsOf: value)
            return
        }
        if let mask = step.mask {
            out.append(contentsOf: mask)
            return
        }
        guard let key = step.hmacKey else { return }
        // A string's text; as written when its escapes make no text (a lone surrogate).
        let input: [UInt8] =
            value.first == 0x22
            ? JSONScan.string(value).map { Array($0.utf8) } ?? Array(value.dropFirst().dropLast()) : Array(value)
        var hmac = key.keyed
        hmac.update(data: input)
        let code = hmac.finalize()
        out.append(0x22)
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        for byte in code {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        out.append(0x22)
    }
}
