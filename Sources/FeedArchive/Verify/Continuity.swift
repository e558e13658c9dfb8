/// Proves, per partition, that the blobs of all lineages (live and backfills) chain from the
/// origin to the checkpoint: each blob's `from_token` cursor must be a cursor the chain has
/// reached. Missing or damaged blobs do not count, so their ranges show up as gaps unless a
/// backfill covers them. Gaps come with the `feedarchive backfill` command that mends them;
/// gaps a person signed off (`gap-ack` lines) are reported as notes.
///
/// `split`/`merge` lines (Cosmos feed ranges) join chains: a partition that ended must have
/// reached the cursor it ended at; a partition that began starts at its cursor; a partition that
/// continues under a new cursor (read through a merged range) carries what it reached over.
struct Continuity {
    struct Gap {
        var place: String
        var message: String
        var fix: String
    }

    private(set) var gaps: [Gap] = []
    private(set) var notes: [String] = []
    private(set) var duplicates = 0
    /// Per partition, the cursors the proof reached: everything before them is archived.
    private(set) var reached: [String: Set<String>] = [:]
    /// Per partition, the last position the proof covered (where an incremental proof resumes).
    private(set) var frontiers: [String: Position] = [:]

    private struct Link {
        var entry: ManifestEntry
        var from: String
        var to: String
        var first: Position
        var last: Position
        var token: ContinuationToken
    }

    /// `covered`: for a proof that resumes after lines proven before (the entries then start with
    /// an epoch line holding the live token there), the last position proven per partition.
    init(
        job: String, entries: [ManifestEntry], intact: [String: Bool], checkpoint: String?,
        covered: [String: Position] = [:]
    ) {
        // Where each lineage starts; the live one from its (last) epoch line.
        var liveStart: ContinuationToken?
        var lineageStarts: [String: ContinuationToken] = [:]
        var acks: [(part: String, from: String, to: String)] = []
        var links: [String: [Link]] = [:]
        var seenPaths: Set<String> = []
        // From split/merge lines, per partition: cursors it ended at (with the line), cursors it
        // began at, and cursors that continue as others.
        var ends: [String: [(cursor: String, entry: ManifestEntry, token: ContinuationToken)]] = [:]
        var starts: [String: [String]] = [:]
        var continues: [String: [String: [String]]] = [:]
        // Each blob's from_token is the previous one's to_token: decode each text once.
        var decoded: [String: ContinuationToken] = [:]
        func token(_ text: String?) -> ContinuationToken? {
            guard let text else { return nil }
            if let known = decoded[text] { return known }
            let value = try? ContinuationToken.decode(text)
            decoded[text] = value
            return value
        }
        for entry in entries {
            guard let to = token(entry.toToken) else { continue }
            switch entry.kind {
            case .epoch:
                if entry.lineage == "live" {
                    liveStart = to
                    links = [:]  // a new live epoch restarts the proof
                    seenPaths = []
                    (ends, starts, continues) = ([:], [:], [:])
                } else {
                    lineageStarts[entry.lineage] = to
                }
            case .gapAck:
                guard let from = token(entry.fromToken) else { continue }
                for (part, cursor) in from.cursors {
                    if let end = to.cursors[part] { acks.append((part, cursor, end)) }
                }
            case .blob, .compact:
                // A blob a compact line replaced is not checked (`intact` has no word on it):
                // the compacted blob stands for it, as one link of the same range.
                guard let part = entry.part, let path = entry.path, intact[path] == true,
                    seenPaths.insert(path).inserted,
                    let from = token(entry.fromToken),
                    let fromCursor = from.cursors[part], let toCursor = to.cursors[part],
                    let first = entry.firstPos.flatMap(Position.init), let last = entry.lastPos.flatMap(Position.init)
                else { continue }
                links[part, default: []].append(
                    Link(entry: entry, from: fromCursor, to: toCursor, first: first, last: last, token: from))
            case .prune:
                continue  // the lines it names stay links (the verifier counts them intact)
            case .rejected:
                continue  // dead letters: the blob line of the same range is the link
            case .split, .merge, .heartbeat:
                // A heartbeat continues a cursor as a later one with nothing in between.
                guard let from = token(entry.fromToken) else { continue }
                for (part, cursor) in from.cursors where to.cursors[part] == nil {
                    ends[part, default: []].append((cursor, entry, from))
                }
                for (part, cursor) in to.cursors {
                    if let old = from.cursors[part] {
                        if old != cursor { continues[part, default: [:]][old, default: []].append(cursor) }
                    } else {
                        starts[part, default: []].append(cursor)
                    }
                }
            }
        }
        guard let liveStart else { return }
        let target = checkpoint.flatMap { try? ContinuationToken.decode($0) }

        for part in Set(liveStart.cursors.keys).union(links.keys).union(starts.keys).union(ends.keys).sorted() {
            var reached: Set<String> = []
            let forward = continues[part] ?? [:]
            // Marks a cursor reached, and every cursor a merge line continued it as.
            func reach(_ cursor: String) {
                var pending = [cursor]
                while let next = pending.popLast() {
                    if reached.insert(next).inserted { pending += forward[next] ?? [] }
                }
            }
            if let start = liveStart.cursors[part] { reach(start) }
            for start in starts[part] ?? [] { reach(start) }
            var frontier = liveStart.cursors[part] ?? starts[part]?.first
            var frontierPos: Position? = covered[part]
            let sorted = (links[part] ?? []).sorted { ($0.first, $1.last) < ($1.first, $0.last) }
            for (index, link) in sorted.enumerated() {
                // A backfill that starts before everything else (e.g. from the beginning, for a
                // job that started at `now`) extends the proof backwards.
                if index == 0, let start = lineageStarts[link.entry.lineage]?.cursors[part], start == link.from {
                    reach(start)
                }
                if let frontierPos, link.last <= frontierPos {
                    // A compacted blob of what an earlier verify proved: the same changes.
                    if link.entry.kind != .compact { duplicates += 1 }
                    reach(link.to)
                    continue
                }
                if let frontierPos, link.first <= frontierPos, link.entry.kind == .compact {
                    // Compacted from blobs proven before and after the mark: contiguous.
                } else if let frontierPos, link.first <= frontierPos {
                    // Starts inside what is covered: contiguous, the overlap is duplicates.
                    duplicates += 1
                    notes.append(
                        "\(link.entry.path ?? "manifest seq \(link.entry.seq)"): positions \(link.first)…\(frontierPos) were archived before (duplicates)"
                    )
                } else if !reached.contains(link.from) {
                    let from = frontier ?? "?"
                    if acks.contains(where: { $0.part == part && $0.from == from && $0.to == link.from }) {
                        notes.append(
                            "partition \(part): changes after cursor \(from) up to \(link.from) are missing; acknowledged by a gap-ack line"
                        )
                    } else {
                        let gapFrom = ContinuationToken(
                            kind: link.token.kind, source: link.token.source, cursors: [part: from],
                            extra: link.token.extra)
                        let gapUntil = ContinuationToken(
                            kind: link.token.kind, source: link.token.source, cursors: [part: link.from],
                            extra: link.token.extra)
                        gaps.append(
                            Gap(
                                place:
                                    "partition \(part), before \(link.entry.path ?? "manifest seq \(link.entry.seq)")",
                                message: "changes after cursor \(from) up to cursor \(link.from) are in no intact blob",
                                fix: "feedarchive backfill \(job) --from \(gapFrom.encoded) --until \(gapUntil.encoded)"
                            ))
                    }
                }
                reach(link.to)
                frontier = link.to
                frontierPos = link.last
            }
            // A partition that a split or merge ended must have been archived up to that point.
            for end in ends[part] ?? [] where !reached.contains(end.cursor) {
                let from = frontier ?? "?"
                if acks.contains(where: { $0.part == part && $0.from == from && $0.to == end.cursor }) {
                    notes.append(
                        "partition \(part): changes after cursor \(from) up to its \(end.entry.kind.rawValue) are missing; acknowledged by a gap-ack line"
                    )
                    continue
                }
                let gapFrom = ContinuationToken(
                    kind: end.token.kind, source: end.token.source, cursors: [part: from], extra: end.token.extra)
                let gapUntil = ContinuationToken(
                    kind: end.token.kind, source: end.token.source, cursors: [part: end.cursor], extra: end.token.extra)
                gaps.append(
                    Gap(
                        place:
                            "partition \(part), before its \(end.entry.kind.rawValue) (manifest seq \(end.entry.seq))",
                        message:
                            "changes after cursor \(from) up to cursor \(end.cursor), where the partition ended, are in no intact blob",
                        fix: "feedarchive backfill \(job) --from \(gapFrom.encoded) --until \(gapUntil.encoded)"))
            }
            self.reached[part] = reached
            if let frontierPos { frontiers[part] = frontierPos }
            if let end = target?.cursors[part], !reached.contains(end), let from = frontier, let token = target {
                if acks.contains(where: { $0.part == part && $0.from == from && $0.to == end }) {
                    notes.append(
                        "partition \(part): changes after cursor \(from) up to the checkpoint are missing; acknowledged by a gap-ack line"
                    )
                } else {
                    let gapFrom = ContinuationToken(
                        kind: token.kind, source: token.source, cursors: [part: from], extra: token.extra)
                    let gapUntil = ContinuationToken(
                        kind: token.kind, source: token.source, cursors: [part: end], extra: token.extra)
                    gaps.append(
                        Gap(
                            place: "partition \(part), before the checkpoint",
                            message:
                                "changes after cursor \(from) up to the checkpoint's cursor \(end) are in no intact blob",
                            fix: "feedarchive backfill \(job) --from \(gapFrom.encoded) --until \(gapUntil.encoded)"))
                }
            }
        }
    }
}
