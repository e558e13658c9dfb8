import FeedArchive

/// One feed range's place in the change feed, the cursor of one partition in a token:
/// the range's effective partition keys `[min, max)`, the physical partition key range it is read
/// through (its own after a split, a larger one after a merge), and where reading goes on.
///
/// Printed as `min,max,via,S` where S is `b` (from the beginning), `t<unix seconds>` (from a time,
/// `If-Modified-Since`), `e<etag>` (after that continuation, sent quoted in `If-None-Match`)
/// or `E<etag>` (an etag the service sent without quotes, sent as is).
struct FeedRangeCursor: Equatable, Sendable, CustomStringConvertible {
    enum Start: Equatable, Sendable {
        case beginning
        case time(Int64)
        case etag(String)
    }

    var min: String
    var max: String
    var via: String
    var start: Start

    init(min: String, max: String, via: String, start: Start) {
        self.min = min
        self.max = max
        self.via = via
        self.start = start
    }

    init?(_ text: String) {
        let parts = text.split(separator: ",", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, !parts[2].isEmpty, let kind = parts[3].first,
            parts[0].allSatisfy(\.isHexDigit), parts[1].allSatisfy(\.isHexDigit)
        else { return nil }
        min = String(parts[0])
        max = String(parts[1])
        via = String(parts[2])
        let value = parts[3].dropFirst()
        switch kind {
        case "b" where value.isEmpty: start = .beginning
        case "t":
            guard let seconds = Int64(value) else { return nil }
            start = .time(seconds)
        case "e": start = .etag("\"" + value + "\"")
        case "E": start = .etag(String(value))
        default: return nil
        }
    }

    var description: String {
        let state: String
        switch start {
        case .beginning: state = "b"
        case .time(let seconds): state = "t\(seconds)"
        case .etag(let etag):
            if etag.count >= 2, etag.hasPrefix("\""), etag.hasSuffix("\"") {
                state = "e" + etag.dropFirst().dropLast()
            } else {
                state = "E" + etag
            }
        }
        return "\(min),\(max),\(via),\(state)"
    }

    /// The continuation as a number when the service uses LSNs as etags (it does), for comparing
    /// with the head; nil otherwise, and then a range is read until the service answers 304.
    var etagNumber: Int64? {
        guard case .etag(let etag) = start else { return nil }
        return Self.number(etag)
    }

    static func number(_ etag: String) -> Int64? {
        Int64(
            etag.hasPrefix("\"") && etag.hasSuffix("\"") && etag.count >= 2 ? String(etag.dropFirst().dropLast()) : etag
        )
    }

    /// True when `[min, max)` lies inside `[lower, upper)`; EPKs compare as strings, `FF` is the end.
    func isInside(_ lower: String, _ upper: String) -> Bool {
        EPK.lessOrEqual(lower, min) && EPK.lessOrEqual(max, upper)
    }
}
