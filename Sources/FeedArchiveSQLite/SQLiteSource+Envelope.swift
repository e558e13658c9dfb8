import CSQLite
import FeedArchive
import Foundation

/// How a row becomes an envelope: times, raw values, text that is not UTF-8.
extension SQLiteSource {
    /// Times the envelope can write: years 1 to 9999, what RFC 3339 spells.
    static let writableMicros: ClosedRange<Int64> = -62_135_596_800_000_000...253_402_300_799_999_999

    /// The time in a timestamp column as microseconds, nil for NULL; `.unconverted` for a value
    /// that is not a time in years 1 to 9999 (text that is no time, a number out of range,
    /// infinity): the change is archived with `ts: null` and the value under `source`.
    enum TimeValue {
        case none
        case micros(Int64)
        case unconverted

        var micros: Int64? {
            if case .micros(let value) = self { return value }
            return nil
        }
    }

    func timestamp(_ statement: Statement, _ column: Int32) -> TimeValue {
        let micros: Int64?
        switch statement.type(column) {
        case SQLITE_NULL: return .none
        case SQLITE_INTEGER:
            let (value, overflow) = statement.int(column).multipliedReportingOverflow(by: settings.timestampUnit)
            micros = overflow ? nil : value
        case SQLITE_FLOAT:
            let value = statement.double(column) * Double(settings.timestampUnit)
            // Inside ±2^63 (exactly representable), so the conversion cannot trap.
            micros = value.isFinite && abs(value) < 9_223_372_036_854_775_808.0 ? Int64(value) : nil
        case SQLITE_TEXT: micros = parseTimestampMicros(statement.text(column))
        default: micros = nil
        }
        guard let micros, Self.writableMicros.contains(micros) else { return .unconverted }
        return .micros(micros)
    }

    public func drainWarnings() async -> [String] {
        db { _ in
            var warnings = rowWarnings
            if rowWarningsLeftOut > 0 { warnings.append("\(rowWarningsLeftOut) more changes like these") }
            rowWarnings = []
            rowWarningsLeftOut = 0
            return warnings
        }
    }

    /// One envelope; the document is copied (without the whitespace around it) when it is valid JSON, and kept as a JSON
    /// string, marked in `source`, when it is not.
    /// Returns false when the op column held a value that names no op: the change is archived
    /// as `c`, with the value under `source.op_unconverted`.
    @discardableResult
    ///
    /// `keepingSpace`: the document with the whitespace around it, as lines were written before
    /// documents were trimmed (to recognise a row archived then).
    func encodeEnvelope(
        _ statement: Statement, sequence: Int64, position: Position, timestamp: Int64?, unconvertedTime: Bool,
        keepingSpace: Bool = false, into out: inout [UInt8]
    ) -> Bool {
        var op = ChangeOp.create
        var unknownOp = false
        if !statement.isNull(4) {
            if let text = statement.string(4), let named = ChangeOp(name: text) {
                op = named
            } else {
                unknownOp = true
            }
        }
        var notJSON = false
        var (keyNotUTF8, documentNotUTF8) = (false, false)
        envelope.write(
            to: &out, position: position, op: op, timestamp: timestamp,
            key: { out in
                switch statement.type(2) {
                case SQLITE_INTEGER: JSONText.appendInt(statement.int(2), to: &out)
                case SQLITE_NULL: EnvelopeWriter.null(&out)
                default: keyNotUTF8 = !EnvelopeWriter.appendText(statement.text(2), to: &out)
                }
            },
            after: { out in
                let document = statement.text(1)
                if statement.isNull(1) {
                    EnvelopeWriter.null(&out)
                } else if !JSONText.appendIfValid(document, to: &out, keepingSpace: keepingSpace) {
                    notJSON = true  // kept, as a JSON string, rather than dropped
                    documentNotUTF8 = !EnvelopeWriter.appendText(document, to: &out)
                }
            },
            before: EnvelopeWriter.null,
            source: { out in
                JSONText.appendLiteral(#""table":"#, to: &out)
                out.append(contentsOf: tableLiteral)
                JSONText.appendLiteral(#","seq":"#, to: &out)
                JSONText.appendInt(sequence, to: &out)
                if notJSON { JSONText.appendLiteral(#","document_not_json":true"#, to: &out) }
                if documentNotUTF8 { JSONText.appendLiteral(#","document_not_utf8":true"#, to: &out) }
                if keyNotUTF8 { JSONText.appendLiteral(#","key_not_utf8":true"#, to: &out) }
                if unknownOp {
                    JSONText.appendLiteral(#","op_unconverted":"#, to: &out)
                    if !EnvelopeWriter.appendText(statement.text(4), to: &out) {
                        JSONText.appendLiteral(#","op_not_utf8":true"#, to: &out)
                    }
                }
                if unconvertedTime {
                    JSONText.appendLiteral(#","ts_unconverted":"#, to: &out)
                    if !EnvelopeWriter.appendText(statement.text(3), to: &out) {
                        JSONText.appendLiteral(#","ts_not_utf8":true"#, to: &out)
                    }
                }
            })
        return !unknownOp
    }

    /// Keeps a warning about one change for the run's summary (the first 20; the rest counted).
    func noteRow(_ warning: @autoclosure () -> String) {
        if rowWarnings.count < 20 {
            rowWarnings.append(warning())
        } else {
            rowWarningsLeftOut += 1
        }
    }
}
