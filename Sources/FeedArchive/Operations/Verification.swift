import Foundation

extension Verifier {
    /// `feedarchive verify`: the archive's own checks, then, when `source` is given, the
    /// comparison of each live blob with the range the source still holds. Read-only.
    public func verify(
        deep: Bool, full: Bool = true, against source: SourceProvider?,
        progress: (@Sendable (Int, Int) -> Void)? = nil
    ) async throws -> VerifyReport {
        var report = try verify(deep: deep, full: full || source != nil, progress: progress)
        if let source {
            var compared = report
            try await source.withSource(job) { source in
                try await compareWithSource(source, report: &compared)
            }
            report = compared
        }
        return report
    }
}

extension VerifyReport {
    /// The report as `verify --json` prints it: every field, sorted, plus `clean`.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        if var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] {
            object["clean"] = isClean
            data = try JSONSerialization.data(
                withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        }
        return String(decoding: data, as: UTF8.self)
    }
}
