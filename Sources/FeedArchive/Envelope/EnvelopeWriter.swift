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
        JSONText.appendLiteral(#"{"pos":""#, to: &out)
        position(&out)
        JSONText.appendLiteral(#"","part":"#, to: &out)
        out.append(contentsOf: partitionLiteral)
        JSONText.appendLiteral(#","op":""#, to: &out)
        out.append(op.rawValue)
        JSONText.appendLiteral(#"","ts":"#, to: &out)
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
        JSONText.appendLiteral(#","key":"#, to: &out)
        try key(&out)
        JSONText.appendLiteral(#","after":"#, to: &out)
        try after(&out)
        JSONText.appendLiteral(#","before":"#, to: &out)
        try before(&out)
        JSONText.appendLiteral(#","source":{"#, to: &out)
        try source(&out)
        JSONText.appendLiteral("}}", to: &out)
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
