import FeedArchive
import Foundation

extension CosmosSource {
    /// What a feed range is read through now.
    enum Route {
        /// Read from this range; `byEPK` when the feed range is only part of it (after a merge).
        case read(PhysicalRange, byEPK: Bool)
        case change(TopologyChange)
    }

    func route(_ partition: String, _ cursor: FeedRangeCursor, _ live: [PhysicalRange]) throws -> Route {
        let overlapping = live.filter { EPK.less($0.min, cursor.max) && EPK.less(cursor.min, $0.max) }
        guard !overlapping.isEmpty else {
            throw FeedArchiveError.temporary(
                "no partition key range covers feed range \(partition) [\(cursor.min), \(cursor.max))")
        }
        let describe = { (range: PhysicalRange) in
            "\(range.id) [\(range.min.isEmpty ? "\"\"" : range.min), \(range.max))"
        }
        let feedRange = "feed range \(partition) [\(cursor.min.isEmpty ? "\"\"" : cursor.min), \(cursor.max))"
        if overlapping.count == 1, cursor.isInside(overlapping[0].min, overlapping[0].max) {
            let range = overlapping[0]
            let exact = range.min == cursor.min && range.max == cursor.max
            if range.id == cursor.via { return .read(range, byEPK: !exact) }
            var next = cursor
            next.via = range.id
            if exact {
                return .change(
                    TopologyChange(
                        kind: .split, ended: [], cursors: [partition: next.description],
                        reason:
                            "\(feedRange), read through range \(cursor.via), is now exactly range \(describe(range)) after a split"
                    ))
            }
            return .change(
                TopologyChange(
                    kind: .merge, ended: [], cursors: [partition: next.description],
                    reason:
                        "\(feedRange), read through range \(cursor.via), was merged into range \(describe(range)); it is read through it by EPK range"
                ))
        }
        var cursors: [String: String] = [:]
        var names: [String] = []
        for range in overlapping {
            let lower = EPK.maximum(range.min, cursor.min)
            let upper = EPK.minimum(range.max, cursor.max)
            let name = lower == range.min && upper == range.max ? range.id : "\(partition)-\(range.id)"
            cursors[name] = FeedRangeCursor(min: lower, max: upper, via: range.id, start: cursor.start).description
            names.append(name)
        }
        return .change(
            TopologyChange(
                kind: .split, ended: [partition], cursors: cursors,
                reason:
                    "\(feedRange) split into \(overlapping.map(describe).joined(separator: ", ")); the children start from its continuation"
            ))
    }
}
