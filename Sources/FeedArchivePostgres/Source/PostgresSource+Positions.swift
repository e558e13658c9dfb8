import FeedArchive
import Foundation
import PostgresNIO

/// The source's identity, its tokens, and where a read starts and stops: LSNs of the slot.
extension PostgresSource {
    public func identity() async throws -> SourceIdentity {
        if let cachedIdentity { return cachedIdentity }
        let row = try await rows(
            "SELECT system_identifier::text, current_database()::text FROM pg_control_system()",
            doing: "read the system identifier"
        ).first
        guard let (system, database) = try row?.decode((String, String).self) else {
            throw FeedArchiveError.sourceUnavailable("pg_control_system() returned nothing")
        }
        let identity = SourceIdentity(facts: ["system_identifier": system, "database": database, "slot": settings.slot])
        cachedIdentity = identity
        return identity
    }

    func token(_ cursor: LSN) async throws -> ContinuationToken { try await token(cursor.description) }

    func token(_ cursor: String) async throws -> ContinuationToken {
        ContinuationToken(kind: kind, source: try await identity().shortFingerprint, cursors: [Self.partition: cursor])
    }

    func cursorLSN(_ token: ContinuationToken) throws -> LSN {
        guard let text = token.cursors[Self.partition], let lsn = LSN(text) else {
            throw FeedArchiveError.data(path: nil, message: "the token has no PostgreSQL LSN for partition 0")
        }
        return lsn
    }

    public func resolve(_ start: StartSpec) async throws -> ContinuationToken {
        switch start {
        case .beginning:
            // A slot holds changes from the point it confirmed; older history needs a snapshot backfill.
            return try await token(try await requireSlot().confirmed)
        case .now:
            _ = try await requireSlot()
            let now = try await rows("SELECT pg_current_wal_lsn()::text", doing: "read the current WAL position").first?
                .decode(String.self)
            return try await token(now.flatMap { LSN($0) } ?? LSN(0))
        case .time:
            throw FeedArchiveError.usage(
                "a PostgreSQL slot cannot start at a time: use beginning, now, lsn=X/Y or a token")
        case .token(let text):
            if text.hasPrefix("lsn=") {
                guard let lsn = LSN(text.dropFirst(4)) else {
                    throw FeedArchiveError.usage("'\(text)': lsn= needs an LSN such as 0/15293F8")
                }
                return try await token(lsn)
            }
            let parsed = try ContinuationToken.decode(text)
            guard parsed.kind == kind, let cursor = parsed.cursors[Self.partition], LSN(cursor) != nil else {
                throw FeedArchiveError.data(path: nil, message: "'\(text.prefix(60))' is not a postgres token")
            }
            try parsed.requireSource(try await identity().shortFingerprint, other: "another server, database or slot")
            return parsed
        }
    }

    public func checkContinuity(from token: ContinuationToken) async throws {
        let cursor = try cursorLSN(token)
        try await checkTimeline(token, cursor: cursor)
        let slot = try await requireSlot()
        if slot.confirmed > cursor {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "replication slot '\(settings.slot)' confirmed \(slot.confirmed), past the checkpoint at \(cursor): something else consumed or advanced the slot, so changes in between may be missing",
                hint:
                    "find out what advanced the slot; to continue from the slot, run `feedarchive epoch JOB --from beginning --reason \"slot advanced elsewhere\"` and backfill with `feedarchive backfill JOB --from beginning`"
            )
        }
    }

    public func checkRetained(from token: ContinuationToken) async throws {
        if let text = token.cursors[Self.partition], SnapshotReader.isSnapshot(text) { return }  // a snapshot is always there
        let cursor = try cursorLSN(token)
        let slot = try await requireSlot()
        if cursor < slot.confirmed {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "slot '\(settings.slot)' no longer holds changes before \(slot.confirmed) (the range starts at \(cursor)): a slot keeps only what it has not confirmed",
                hint: "`feedarchive backfill JOB --from beginning` takes a snapshot of the published tables instead")
        }
    }

    public func head(for token: ContinuationToken) async throws -> [String: String] {
        let now = try await rows("SELECT pg_current_wal_lsn()::text", doing: "read the current WAL position").first?
            .decode(String.self)
        let head = max(now.flatMap { LSN($0) } ?? LSN(0), try cursorLSN(token))
        return [Self.partition: head.description]
    }
}
