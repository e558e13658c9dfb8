/// Writes envelope lines (see `Envelope`): the fields in their order, the partition as a JSON
/// string, the op as its letter, the time as RFC 3339 UTC or `null`. The source supplies what
/// only it knows (the position's bytes, the key, the row before and after, its own facts) as
/// closures that write JSON values, so no value is copied twice.
///
/// Generic over the sink and inlinable: each source gets code specialised for its buffer, as
/// fast as the bytes written by hand. One writer per partition; it keeps the text of the last
/// time it wrote, because the changes of a page mostly share a few.
public struct EnvelopeWriter: Sendable {
    /// The partition as a JSON string literal, quotes included.
    @usableFromInline let partitionLiteral: [UInt8]
    @usableFromInline var lastMicros: Int64?
    @usableFromInline var lastTimeText: [UInt8] = []
    /// Where the last line written holds each of its eight values, from the line's first byte
    /// (what `EnvelopeFields.locate` finds in it): a source hands them on with its page, so the
    /// transform steps need not look for them.
    public var fields = EnvelopeFields.Ranges()

    /// A writer for the records of `partition` (`Envelope.singlePartition` for a source that has one).
    public init(partition: String = Envelope.singlePartition) {
        var literal: [UInt8] = []
        JSONText.appendString(partition, to: &literal)
        partitionLiteral = literal
    }

    /// Appends one envelope, without a newline.
    /// - Parameters:
    ///   - position: writes the position's characters (no quotes).
    ///   - timestamp: the source commit time in microseconds since the Unix epoch, or nil.
    ///   - key, after, before: each writes one JSON value (`null` when unknown).
    ///   - source: writes the members of the `source` object, without its braces.
    @inlinable
    public mutating func write<Sink: ByteOutput & ~Copyable>(
        to out: inout Sink,
        position: (inout Sink) -> Void,
        op: ChangeOp,
        timestamp: Int64?,
        key: (inout Sink) throws -> Void,
        after: (inout Sink) throws -> Void,
        before: (inout Sink) throws -> Void,
        source: (inout Sink) throws -> Void
    ) rethrows {
        let start = out.count
        JSONText.appendLiteral(#"{"pos":""#, to: &out)
        fields.lower[0] = out.count - start - 1
        position(&out)
        JSONText.appendLiteral(#"","part":"#, to: &out)
        fields.upper[0] = out.count - start - 8
        fields.lower[1] = out.count - start
        out.append(contentsOf: partitionLiteral)
        fields.upper[1] = out.count - start
        JSONText.appendLiteral(#","op":""#, to: &out)
        fields.lower[2] = out.count - start - 1
        out.append(op.rawValue)
        JSONText.appendLiteral(#"","ts":"#, to: &out)
        fields.upper[2] = out.count - start - 6
        fields.lower[3] = out.count - start
        if let timestamp {
            if timestamp != lastMicros {
                lastMicros = timestamp
                lastTimeText.removeAll(keepingCapacity: true)
                appendRFC3339(microseconds: timestamp, to: &lastTimeText)
            }
            out.append(0x22)
            out.append(contentsOf: lastTimeText)
            out.append(0x22)
        } else {
            JSONText.appendLiteral("null", to: &out)
        }
        fields.upper[3] = out.count - start
        JSONText.appendLiteral(#","key":"#, to: &out)
        fields.lower[4] = out.count - start
        try key(&out)
        fields.upper[4] = out.count - start
        JSONText.appendLiteral(#","after":"#, to: &out)
        fields.lower[5] = out.count - start
        try after(&out)
        fields.upper[5] = out.count - start
        JSONText.appendLiteral(#","before":"#, to: &out)
        fields.lower[6] = out.count - start
        try before(&out)
        fields.upper[6] = out.count - start
        JSONText.appendLiteral(#","source":{"#, to: &out)
        fields.lower[7] = out.count - start - 1
        try source(&out)
        JSONText.appendLiteral("}}", to: &out)
        fields.upper[7] = out.count - start - 1
    }

    /// `write` for a position the source holds as a `Position`.
    @inlinable
    public mutating func write<Sink: ByteOutput & ~Copyable>(
        to out: inout Sink,
        position: Position,
        op: ChangeOp,
        timestamp: Int64?,
        key: (inout Sink) throws -> Void,
        after: (inout Sink) throws -> Void,
        before: (inout Sink) throws -> Void,
        source: (inout Sink) throws -> Void
    ) rethrows {
        try write(
            to: &out, position: { sink in position.appendUTF8(to: &sink) }, op: op, timestamp: timestamp, key: key,
            after: after, before: before, source: source)
    }

    /// Writes `null`, for a field the change does not have.
    @inlinable
    public static func null<Sink: ByteOutput & ~Copyable>(_ out: inout Sink) {
        JSONText.appendLiteral("null", to: &out)
    }
}

extension Position {
    /// Appends the position's characters.
    @inlinable
    public func appendUTF8<Sink: ByteOutput & ~Copyable>(to out: inout Sink) {
        var text = rawValue
        text.withUTF8 { out.append(contentsOf: UnsafeRawBufferPointer($0)) }
    }
}
