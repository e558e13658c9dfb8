import Foundation

extension EnvelopeWriter {
    /// Writes text a source read as a JSON string. Bytes that are not UTF-8 cannot be a JSON
    /// string: they are written as `{"base64":"…"}` (the original bytes, recoverable) and the
    /// function returns false, so the source marks the field in `source` (`<field>_not_utf8`).
    /// The one rule for every source: each line stays valid JSON, and nothing is replaced.
    public static func appendText<Sink: ByteOutput & ~Copyable>(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout Sink)
        -> Bool
    {
        let start = out.count
        if JSONText.appendString(utf8: bytes, to: &out) || String(validating: bytes, as: UTF8.self) != nil {
            return true
        }
        out.truncate(to: start)
        JSONText.appendLiteral(#"{"base64":""#, to: &out)
        var encoded = Data(bytes).base64EncodedString()
        encoded.withUTF8 { out.append(contentsOf: UnsafeRawBufferPointer($0)) }
        JSONText.appendLiteral(#""}"#, to: &out)
        return false
    }
}
