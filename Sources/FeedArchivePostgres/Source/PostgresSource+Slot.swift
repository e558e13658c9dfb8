import FeedArchive
import Foundation
import PostgresNIO

/// The replication slot and the publication it decodes: their state, and `setup`.
extension PostgresSource {
    struct SlotState {
        var plugin: String
        var database: String
        var confirmed: LSN
        var restart: LSN?
        var walStatus: String?
        var activePID: Int?
        var retainedBytes: Int64?
    }

    func slotState() async throws -> SlotState? {
        let rows = try await rows(
            """
            SELECT plugin::text, database::text, confirmed_flush_lsn::text, restart_lsn::text, wal_status, active_pid,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8
            FROM pg_replication_slots WHERE slot_name = \(settings.slot)
            """, doing: "read slot \(settings.slot)")
        guard let row = rows.first else { return nil }
        let (plugin, database, confirmed, restart, status, pid, retained) = try row.decode(
            (String?, String?, String?, String?, String?, Int?, Int64?).self)
        return SlotState(
            plugin: plugin ?? "", database: database ?? "", confirmed: confirmed.flatMap { LSN($0) } ?? LSN(0),
            restart: restart.flatMap { LSN($0) }, walStatus: status, activePID: pid, retainedBytes: retained)
    }

    /// The slot, or a refusal that says how to get one.
    func requireSlot() async throws -> SlotState {
        if settings.create { try await setup() }
        guard let slot = try await slotState() else {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "replication slot '\(settings.slot)' does not exist on \(settings.endpoint): changes since the checkpoint cannot be proven complete",
                hint:
                    "if it was dropped, create it with `feedarchive setup JOB`, then start a new lineage with `feedarchive epoch JOB --from now --reason \"slot re-created\"` and backfill what is missing with `feedarchive backfill JOB --from beginning`"
            )
        }
        guard slot.plugin == "pgoutput" else {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "replication slot '\(settings.slot)' uses the plugin '\(slot.plugin)'; feedarchive reads pgoutput slots"
            )
        }
        if slot.walStatus == "lost" {
            throw FeedArchiveError.data(
                path: nil,
                message:
                    "replication slot '\(settings.slot)' has wal_status = lost: the server removed WAL it still needed (max_slot_wal_keep_size), so changes were lost",
                hint:
                    "drop and re-create the slot (`SELECT pg_drop_replication_slot('\(settings.slot)')`, then `feedarchive setup JOB`), start a new lineage with `feedarchive epoch JOB --from now --reason \"slot lost\"`, and backfill with `feedarchive backfill JOB --from beginning`"
            )
        }
        return slot
    }

    /// Creates the publication (for `tables`) and the slot when they are missing; adds
    /// listed tables the publication lacks. Safe to run again.
    public func setup() async throws {
        let level = try await rows("SELECT current_setting('wal_level')", doing: "read wal_level").first?.decode(
            String.self)
        guard level == "logical" else {
            throw FeedArchiveError.sourceUnavailable(
                "\(settings.endpoint) has wal_level = \(level ?? "?"); logical decoding needs wal_level = logical (set it in postgresql.conf and restart the server)"
            )
        }
        let existing =
            try await rows(
                "SELECT count(*)::int FROM pg_publication WHERE pubname = \(settings.publication)",
                doing: "look up the publication"
            ).first?.decode(Int.self) ?? 0
        if existing == 0 {
            guard !settings.tables.isEmpty else {
                throw FeedArchiveError.data(
                    path: nil,
                    message:
                        "publication '\(settings.publication)' does not exist and the job lists no source.tables to create it for"
                )
            }
            _ = try await rows(
                PostgresQuery(
                    unsafeSQL:
                        "CREATE PUBLICATION \(settings.publication) FOR TABLE \(settings.tables.joined(separator: ", "))"
                ), doing: "create publication \(settings.publication)")
        } else if !settings.tables.isEmpty {
            let published = try await rows(
                "SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = \(settings.publication)",
                doing: "list the publication's tables"
            ).map { try $0.decode(String.self) }
            for table in settings.tables {
                let qualified = table.contains(".") ? table : "public." + table
                if !published.contains(qualified) {
                    _ = try await rows(
                        PostgresQuery(unsafeSQL: "ALTER PUBLICATION \(settings.publication) ADD TABLE \(table)"),
                        doing: "add \(table) to publication \(settings.publication)")
                }
            }
        }
        if try await slotState() == nil {
            do {
                _ = try await rows(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot(\(settings.slot)::name, 'pgoutput')",
                    doing: "create slot \(settings.slot)")
            } catch let error as FeedArchiveError {
                if try await slotState() == nil { throw error }  // created meanwhile by another run: fine
            }
        }
    }
}
