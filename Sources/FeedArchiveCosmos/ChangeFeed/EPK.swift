/// Effective partition key bounds: hex strings compared as strings, "" the start, "FF" the end.
enum EPK {
    static let end = "FF"

    static func lessOrEqual(_ a: String, _ b: String) -> Bool {
        if b == end { return true }
        if a == end { return false }
        return a <= b
    }

    static func less(_ a: String, _ b: String) -> Bool { lessOrEqual(a, b) && a != b }

    static func maximum(_ a: String, _ b: String) -> String { lessOrEqual(a, b) ? b : a }
    static func minimum(_ a: String, _ b: String) -> String { lessOrEqual(a, b) ? a : b }
}
