import FeedArchive
import Foundation
import PostgresNIO

/// What `status`, the run's warnings and the metrics file show about the slot.
extension PostgresSource {
    public func warnings() async throws -> [String] {
        guard let slot = try await slotState(), let retained = slot.retainedBytes, retained > settings.walWarning else {
            return []
        }
        return [
            "slot \(settings.slot) retains \(retained >> 20) MiB of WAL (more than source.wal_warning): run the job more often, or check that it succeeds"
        ]
    }

    /// Changes cannot be counted without decoding them; `status` shows the slot's lag in bytes.
    public func lag(from token: ContinuationToken) async throws -> Int64? { nil }

    public func statusFacts() async throws -> [(String, String)] {
        guard let slot = try await slotState() else { return [("slot", "\(settings.slot) MISSING")] }
        let lag = try await rows(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = \(settings.slot)",
            doing: "read the slot lag"
        ).first?.decode(Int64?.self)
        var facts: [(String, String)] = [
            (
                "slot",
                "\(settings.slot) confirmed \(slot.confirmed), wal_status \(slot.walStatus ?? "?")\(slot.activePID.map { ", active pid \($0)" } ?? "")"
            ),
            ("slot lag", "\(lag ?? 0) bytes of WAL not yet acknowledged"),
        ]
        if let retained = slot.retainedBytes {
            facts.append(
                (
                    "wal held",
                    "\(retained) bytes"
                        + (retained > settings.walWarning
                            ? " — WARNING: above source.wal_warning (\(settings.walWarning))" : "")
                ))
        }
        return facts
    }

    public func metrics() async throws -> [String: Double] {
        guard let slot = try await slotState() else { return ["slot_missing": 1] }
        let lag = try await rows(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = \(settings.slot)",
            doing: "read the slot lag"
        ).first?.decode(Int64?.self)
        return [
            "slot_lag_bytes": Double(lag ?? 0), "slot_retained_wal_bytes": Double(slot.retainedBytes ?? 0),
            "slot_missing": 0,
        ]
    }
}
