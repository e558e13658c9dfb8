import Crypto
import Foundation

/// The steps compiled for applying, once per job: the path trees flattened into one array
/// (a node's children side by side), every name as bytes in one pool, and consecutive field
/// steps (`select`, `drop`, `rename`, `redact`) fused into one walk over a document. A record
/// then costs one pass over each document per run of field steps, and no allocation unless a
/// value is redacted from inside an object.
///
/// A fused walk gives the bytes the steps give one after another: at each field the steps
/// are taken in order (a rename changes the name the later steps match, a redaction the value
/// they see, a drop ends it), and an object or array is rewritten when any step reaches into
/// it (fields joined without spaces), else copied as it is.
final class TransformProgram: Sendable {
    // Immutable once made; a class so that reaching it per change costs one reference.
    struct Node: Sendable {
        /// The children: `nodes[first ..< first + count]`, in the order the paths named them.
        var first: Int32 = 0
        var count: Int32 = 0
        /// The field name (UTF-8, escapes decoded) and its JSON text (with quotes), in the pool.
        var name: Range<Int32> = 0..<0
        var json: Range<Int32> = 0..<0
        var leaf = false
        /// `rename`: the new name and its JSON text; empty when none.
        var newName: Range<Int32> = 0..<0
        var newJSON: Range<Int32> = 0..<0
        /// `set`: the JSON text of a constant (empty when none), or the index of a source path.
        var constant: Range<Int32> = 0..<0
        var source: Int32 = -1
    }

    enum Stage: Sendable {
        case filter(Int)
        case partition(Int)
        /// Field steps walked together (select, drop, rename, redact), by index.
        case fields([Int])
        /// A `set`: its sources are read from the document before it, and the fields it adds
        /// go at the end of their object, so it walks alone.
        case set(Int)
    }

    let nodes: [Node]
    let pool: [UInt8]
    /// Each step's root node (-1 for filters and partition_by).
    let roots: [Int32]
    let kinds: [Transform.Step.Kind]
    let stages: [Stage]
    /// The paths a filter (one) or a folder template (one per piece) names, as bytes.
    let paths: [[Path]]
    /// Field names, UTF-8.
    typealias Path = [[UInt8]]
    /// The most states one walk holds at once: steps times the deepest path, plus one level.
    let stateCapacity: Int

    init(steps: [Transform.Step]) {
        kinds = steps.map(\.kind)
        paths = steps.map { step in
            if case .field(_, let path, _) = step.condition { return [path.map { Array($0.utf8) }] }
            return step.template.map { piece in
                if case .field(_, let path) = piece { return path.map { Array($0.utf8) } }
                return []
            }
        }
        var builder = Builder()
        var roots: [Int32] = []
        var deepest = 1
        for step in steps {
            switch step.kind {
            case .filter, .partitionBy:
                roots.append(-1)
            default:
                let index = builder.nodes.count
                builder.nodes.append(Node())
                builder.place(step.root, at: index, depth: 1, deepest: &deepest)
                roots.append(Int32(index))
            }
        }
        nodes = builder.nodes
        pool = builder.pool
        self.roots = roots
        stateCapacity = steps.count * (deepest + 1) + 1
        var stages: [Stage] = []
        var run: [Int] = []
        for (index, step) in steps.enumerated() {
            switch step.kind {
            case .select, .drop, .rename, .redact:
                run.append(index)
                continue
            default: break
            }
            if !run.isEmpty { stages.append(.fields(run)) }
            run = []
            switch step.kind {
            case .filter: stages.append(.filter(index))
            case .partitionBy: stages.append(.partition(index))
            default: stages.append(.set(index))
            }
        }
        if !run.isEmpty { stages.append(.fields(run)) }
        self.stages = stages
    }

    /// The flattened trees, being made.
    private struct Builder {
        var nodes: [Node] = []
        var pool: [UInt8] = []

        mutating func add(_ bytes: some Collection<UInt8>) -> Range<Int32> {
            let start = Int32(pool.count)
            pool.append(contentsOf: bytes)
            return start..<Int32(pool.count)
        }

        mutating func place(_ node: Transform.PathNode, at index: Int, depth: Int, deepest: inout Int) {
            deepest = max(deepest, depth)
            nodes[index].leaf = node.leaf
            if let newName = node.newName {
                nodes[index].newName = add(Array(newName.utf8))
                var json: [UInt8] = []
                JSONText.appendString(newName, to: &json)
                nodes[index].newJSON = add(json)
            }
            if let constant = node.constant { nodes[index].constant = add(constant) }
            nodes[index].source = node.source.map(Int32.init) ?? -1
            let first = nodes.count
            nodes[index].first = Int32(first)
            nodes[index].count = Int32(node.order.count)
            for name in node.order {
                var child = Node()
                child.name = add(Array(name.utf8))
                var json: [UInt8] = []
                JSONText.appendString(name, to: &json)
                child.json = add(json)
                nodes.append(child)
            }
            for (offset, name) in node.order.enumerated() {
                place(node.children[name]!, at: first + offset, depth: depth + 1, deepest: &deepest)
            }
        }
    }
}

/// One document being transformed: its text in `buffer[range]`.
struct TransformWalk: ~Copyable {
    struct State {
        var step: Int32
        var node: Int32
    }

    let nodes: UnsafeBufferPointer<TransformProgram.Node>
    let pool: UnsafeBufferPointer<UInt8>
    let kinds: UnsafeBufferPointer<Transform.Step.Kind>
    let steps: [Transform.Step]
    let states: UnsafeMutableBufferPointer<State>
    /// The redacted value of the field at hand (a string, or `null`), and the one before it
    /// when a later step redacts it again.
    var redacted: [UInt8] = []
    var previous: [UInt8] = []

    init(
        nodes: UnsafeBufferPointer<TransformProgram.Node>, pool: UnsafeBufferPointer<UInt8>,
        kinds: UnsafeBufferPointer<Transform.Step.Kind>, steps: [Transform.Step],
        states: UnsafeMutableBufferPointer<State>, redacted: [UInt8]
    ) {
        self.nodes = nodes
        self.pool = pool
        self.kinds = kinds
        self.steps = steps
        self.states = states
        self.redacted = redacted
    }

    /// The redaction buffer, for the next walk.
    mutating func take() -> [UInt8] {
        var buffer: [UInt8] = []
        swap(&buffer, &redacted)
        return buffer
    }

    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }

    func bytes(_ range: Range<Int32>) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: pool[Int(range.lowerBound)..<Int(range.upperBound)])
    }

    /// The child of `node` named `name` (as written in the document when `escaped`, escapes
    /// and all; else UTF-8), or -1.
    func child(of node: Int32, named name: UnsafeBufferPointer<UInt8>, escaped: Bool) -> Int32 {
        let parent = nodes[Int(node)]
        guard parent.count > 0 else { return -1 }
        if escaped && Self.hasBackslash(name) {
            var quoted: [UInt8] = [0x22]
            quoted.append(contentsOf: name)
            quoted.append(0x22)
            guard let decoded = JSONScan.string(quoted[...]) else { return -1 }
            var text = decoded
            return text.withUTF8 { child(of: node, named: $0, escaped: false) }
        }
        for index in Int(parent.first)..<Int(parent.first + parent.count) {
            let candidate = nodes[index].name
            let length = Int(candidate.upperBound - candidate.lowerBound)
            if length == name.count
                && (length == 0 || Self.same(pool.baseAddress! + Int(candidate.lowerBound), name.baseAddress!, length))
            {
                return Int32(index)
            }
        }
        return -1
    }

    /// Whether a name as written holds an escape. Names are short: a loop, not a call.
    @inline(__always)
    static func hasBackslash(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        guard name.count <= 32 else { return memchr(name.baseAddress!, 0x5C, name.count) != nil }
        for byte in name where byte == 0x5C { return true }
        return false
    }

    /// Whether `count` bytes at `a` and `b` are equal. Names are short: a loop, not a call.
    @inline(__always)
    static func same(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        guard count <= 32 else { return memcmp(a, b, count) == 0 }
        var index = 0
        while index < count {
            if a[index] != b[index] { return false }
            index += 1
        }
        return true
    }

    func skipSpace(_ buffer: UnsafeBufferPointer<UInt8>, _ index: inout Int, _ end: Int) {
        while index < end && Self.isSpace(buffer[index]) { index += 1 }
    }

    /// The end of the value at `index`, and that end without trailing spaces.
    func valueEnd(_ buffer: UnsafeBufferPointer<UInt8>, _ index: Int, _ end: Int) throws -> (Int, Int) {
        let limited = UnsafeBufferPointer(rebasing: buffer[0..<end])
        guard let after = try? EnvelopeFields.skipValue(limited, from: index) else {
            throw Transform.Failure(description: "a malformed value at byte \(index)")
        }
        var trimmed = after
        while trimmed > index && Self.isSpace(buffer[trimmed - 1]) { trimmed -= 1 }
        return (after, trimmed)
    }

    // MARK: - Fused field steps

    /// The value `buffer[start ..< end]` with the steps `states[low ..< high]` applied.
    mutating func value(
        _ buffer: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ low: Int, _ high: Int,
        into out: inout [UInt8]
    ) throws {
        guard start < end, low < high else {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start..<end]))
            return
        }
        switch buffer[start] {
        case 0x7B:
            try object(buffer, start, end, low, high, into: &out)
        case 0x5B:
            try array(buffer, start, end, into: &out) { walk, from, to, out in
                try walk.object(buffer, from, to, low, high, into: &out)
            }
        default:
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start..<end]))
        }
    }

    /// An object with the field steps `states[low ..< high]` applied, each field once.
    mutating func object(
        _ buffer: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ low: Int, _ high: Int,
        into out: inout [UInt8]
    ) throws {
        out.append(0x7B)
        var first = true
        try fields(buffer, start, end) { walk, name, from, to in
            // The steps in order, at this field.
            let escaped = Self.hasBackslash(name)
            var dropped = false
            var renamed: Int32 = -1
            var isRedacted = false
            var top = high
            for position in low..<high {
                let state = walk.states[position]
                let child: Int32
                if renamed >= 0 {
                    child = walk.child(
                        of: state.node, named: walk.bytes(walk.nodes[Int(renamed)].newName), escaped: false)
                } else {
                    child = walk.child(of: state.node, named: name, escaped: escaped)
                }
                let kind = walk.kinds[Int(state.step)]
                if child < 0 {
                    if kind == .select {
                        dropped = true
                        break
                    }
                    continue
                }
                let node = walk.nodes[Int(child)]
                if !node.leaf {
                    // Into the value, for this step; a redacted value is a string, with nothing inside.
                    if !isRedacted {
                        walk.states[top] = State(step: state.step, node: child)
                        top += 1
                    }
                    continue
                }
                switch kind {
                case .drop:
                    dropped = true
                case .rename:
                    renamed = child
                case .redact:
                    if isRedacted {
                        swap(&walk.redacted, &walk.previous)
                        let hidden = walk.previous
                        try hidden.withUnsafeBufferPointer { try walk.redact($0, 0, $0.count, step: Int(state.step)) }
                    } else if top > high {
                        // The steps before reach into the value: it is hidden as they left it.
                        var inner: [UInt8] = []
                        try walk.value(buffer, from, to, high, top, into: &inner)
                        try inner.withUnsafeBufferPointer { try walk.redact($0, 0, $0.count, step: Int(state.step)) }
                    } else {
                        try walk.redact(buffer, from, to, step: Int(state.step))
                    }
                    isRedacted = true
                    top = high
                default:
                    break  // select: the whole value stays
                }
                if dropped { break }
            }
            if !dropped {
                if !first { out.append(0x2C) }
                first = false
                let nameStart = name.baseAddress! - buffer.baseAddress! - 1
                if renamed < 0 && !isRedacted && top <= high && nameStart + name.count + 3 == from {
                    // `"name":value` as written, in one copy.
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[nameStart..<to]))
                    return
                }
                if renamed >= 0 {
                    out.append(contentsOf: walk.bytes(walk.nodes[Int(renamed)].newJSON))
                } else {
                    out.append(0x22)
                    out.append(contentsOf: name)
                    out.append(0x22)
                }
                out.append(0x3A)
                if isRedacted {
                    out.append(contentsOf: walk.redacted)
                } else if top > high {
                    try walk.value(buffer, from, to, high, top, into: &out)
                } else {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[from..<to]))
                }
            }
        }
        out.append(0x7D)
    }

    /// Calls `body` with each field of the object `buffer[start ..< end]`: its name as written
    /// (between the quotes) and its value's bounds. An empty range is an object without fields.
    mutating func fields(
        _ buffer: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int,
        _ body: (inout TransformWalk, UnsafeBufferPointer<UInt8>, Int, Int) throws -> Void
    ) throws {
        guard start < end else { return }
        var index = start
        guard buffer[index] == 0x7B else { throw Transform.Failure(description: "a malformed object") }
        index += 1
        skipSpace(buffer, &index, end)
        if index < end && buffer[index] == 0x7D { return }
        while true {
            skipSpace(buffer, &index, end)
            guard index < end, buffer[index] == 0x22 else { throw Transform.Failure(description: "a malformed object") }
            let (nameAfter, _) = try valueEnd(buffer, index, end)
            let name = UnsafeBufferPointer(rebasing: buffer[(index + 1)..<(nameAfter - 1)])
            index = nameAfter
            skipSpace(buffer, &index, end)
            guard index < end, buffer[index] == 0x3A else { throw Transform.Failure(description: "a malformed object") }
            index += 1
            skipSpace(buffer, &index, end)
            guard index < end else { throw Transform.Failure(description: "a malformed object") }
            let valueStart = index
            let (after, valueEnd) = try valueEnd(buffer, index, end)
            index = after
            try body(&self, name, valueStart, valueEnd)
            skipSpace(buffer, &index, end)
            guard index < end else { throw Transform.Failure(description: "a malformed object") }
            if buffer[index] == 0x2C {
                index += 1
                continue
            }
            guard buffer[index] == 0x7D else { throw Transform.Failure(description: "a malformed object") }
            return
        }
    }

    /// An array rewritten: each object element through `element`, the others as they are.
    mutating func array(
        _ buffer: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, into out: inout [UInt8],
        _ element: (inout TransformWalk, Int, Int, inout [UInt8]) throws -> Void
    ) throws {
        var index = start + 1
        out.append(0x5B)
        skipSpace(buffer, &index, end)
        if index < end && buffer[index] == 0x5D {
            out.append(0x5D)
            return
        }
        var first = true
        while true {
            skipSpace(buffer, &index, end)
            guard index < end else { throw Transform.Failure(description: "a malformed array") }
            let (after, trimmed) = try valueEnd(buffer, index, end)
            if !first { out.append(0x2C) }
            first = false
            if buffer[index] == 0x7B {
                try element(&self, index, trimmed, &out)
            } else {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[index..<trimmed]))
            }
            index = after
            skipSpace(buffer, &index, end)
            guard index < end else { throw Transform.Failure(description: "a malformed array") }
            if buffer[index] == 0x2C {
                index += 1
                continue
            }
            guard buffer[index] == 0x5D else { throw Transform.Failure(description: "a malformed array") }
            out.append(0x5D)
            return
        }
    }

    /// `redacted` becomes the HMAC-SHA-256 of the value (a string's text, any other value's
    /// JSON text) as 64 hex digits, or the mask. `null` stays `null`: there is nothing to hide.
    mutating func redact(_ buffer: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, step: Int) throws {
        redacted.removeAll(keepingCapacity: true)
        let text = UnsafeBufferPointer(rebasing: buffer[start..<end])
        if text.count == 4 && memcmp(text.baseAddress!, "null", 4) == 0 {
            redacted.append(contentsOf: text)
            return
        }
        if let mask = steps[step].mask {
            redacted.append(contentsOf: mask)
            return
        }
        guard let key = steps[step].hmacKey else { return }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { digest in
            if text.first == 0x22 {
                let inner = UnsafeBufferPointer(rebasing: text.dropFirst().dropLast())
                if inner.isEmpty || memchr(inner.baseAddress!, 0x5C, inner.count) == nil {
                    key.fast.authenticate(UnsafeRawBufferPointer(inner), into: digest.baseAddress!)
                } else if let decoded = JSONScan.string(ArraySlice(text)) {
                    Array(decoded.utf8).withUnsafeBytes { key.fast.authenticate($0, into: digest.baseAddress!) }
                } else {
                    // Escapes that make no text (a lone surrogate): the string as written.
                    key.fast.authenticate(UnsafeRawBufferPointer(inner), into: digest.baseAddress!)
                }
            } else {
                key.fast.authenticate(UnsafeRawBufferPointer(text), into: digest.baseAddress!)
            }
            redacted.append(0x22)
            for byte in digest {
                redacted.append(Self.hexDigits[Int(byte >> 4)])
                redacted.append(Self.hexDigits[Int(byte & 0x0F)])
            }
            redacted.append(0x22)
        }
    }

    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    // MARK: - set

    /// An object with a `set` step's node applied: named fields get their values, those the
    /// object lacks are added at its end, in the order the step names them.
    mutating func set(
        _ buffer: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, node: Int32,
        found: [(UnsafeBufferPointer<UInt8>, Range<Int>)?], into out: inout [UInt8]
    ) throws {
        let parent = nodes[Int(node)]
        var seen = [Bool](repeating: false, count: Int(parent.count))
        out.append(0x7B)
        var first = true
        try fields(buffer, start, end) { walk, name, from, to in
            if !first { out.append(0x2C) }
            first = false
            out.append(0x22)
            out.append(contentsOf: name)
            out.append(0x22)
            out.append(0x3A)
            let child = walk.child(of: node, named: name, escaped: true)
            if child < 0 {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[from..<to]))
            } else {
                seen[Int(child - parent.first)] = true
                if walk.nodes[Int(child)].leaf {
                    walk.setValue(child, found: found, into: &out)
                } else {
                    try walk.setInto(buffer, from, to, node: child, found: found, into: &out)
                }
            }
        }
        // Fields the document does not have yet.
        for offset in 0..<Int(parent.count) where !seen[offset] {
            let child = parent.first + Int32(offset)
            if !first { out.append(0x2C) }
            first = false
            out.append(contentsOf: bytes(nodes[Int(child)].json))
            out.append(0x3A)
            if nodes[Int(child)].leaf {
                setValue(child, found: found, into: &out)
            } else {
                try set(buffer, 0, 0, node: child, found: found, into: &out)
            }
        }
        out.append(0x7D)
    }

    /// A `set` into a nested object, or into each object of an array; other values are left as
    /// they are.
    mutating func setInto(
        _ buffer: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, node: Int32,
        found: [(UnsafeBufferPointer<UInt8>, Range<Int>)?], into out: inout [UInt8]
    ) throws {
        guard start < end else { return }
        switch buffer[start] {
        case 0x7B:
            try set(buffer, start, end, node: node, found: found, into: &out)
        case 0x5B:
            try array(buffer, start, end, into: &out) { walk, from, to, out in
                try walk.set(buffer, from, to, node: node, found: found, into: &out)
            }
        default:
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start..<end]))
        }
    }

    func setValue(_ node: Int32, found: [(UnsafeBufferPointer<UInt8>, Range<Int>)?], into out: inout [UInt8]) {
        let spec = nodes[Int(node)]
        if !spec.constant.isEmpty {
            out.append(contentsOf: bytes(spec.constant))
        } else if spec.source >= 0, let (buffer, range) = found[Int(spec.source)] {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[range]))
        } else {
            out.append(contentsOf: "null".utf8)
        }
    }
}

extension Transform {
    /// The value at `path` (field names, UTF-8) in the object `buffer[range]`: the last field
    /// of a name wins, as in a JSON parser; nil when absent or not reachable through objects.
    static func locate(
        _ path: ArraySlice<[UInt8]>, in buffer: UnsafeBufferPointer<UInt8>, _ range: Range<Int>
    ) -> Range<Int>? {
        guard let wanted = path.first else { return nil }
        let end = range.upperBound
        var index = range.lowerBound
        func skipSpace() { while index < end && TransformWalk.isSpace(buffer[index]) { index += 1 } }
        let limited = UnsafeBufferPointer(rebasing: buffer[0..<end])
        skipSpace()
        guard index < end, buffer[index] == 0x7B else { return nil }
        index += 1
        skipSpace()
        if index < end && buffer[index] == 0x7D { return nil }
        var found: Range<Int>?
        while true {
            skipSpace()
            guard index < end, buffer[index] == 0x22,
                let nameAfter = try? EnvelopeFields.skipValue(limited, from: index)
            else { return nil }
            let name = UnsafeBufferPointer(rebasing: buffer[(index + 1)..<(nameAfter - 1)])
            index = nameAfter
            skipSpace()
            guard index < end, buffer[index] == 0x3A else { return nil }
            index += 1
            skipSpace()
            guard let after = try? EnvelopeFields.skipValue(limited, from: index) else { return nil }
            var trimmed = after
            while trimmed > index && TransformWalk.isSpace(buffer[trimmed - 1]) { trimmed -= 1 }
            let equal: Bool
            if name.isEmpty || !TransformWalk.hasBackslash(name) {
                equal =
                    name.count == wanted.count
                    && (name.isEmpty
                        || wanted.withUnsafeBufferPointer {
                            TransformWalk.same($0.baseAddress!, name.baseAddress!, name.count)
                        })
            } else {
                equal = JSONScan.nameEquals(ArraySlice(name), wanted)
            }
            if equal { found = index..<trimmed }
            index = after
            skipSpace()
            guard index < end else { return nil }
            if buffer[index] == 0x2C {
                index += 1
                continue
            }
            guard buffer[index] == 0x7D else { return nil }
            break
        }
        guard let value = found else { return nil }
        if path.count == 1 { return value }
        return buffer[value.lowerBound] == 0x7B ? locate(path.dropFirst(), in: buffer, value) : nil
    }
}
