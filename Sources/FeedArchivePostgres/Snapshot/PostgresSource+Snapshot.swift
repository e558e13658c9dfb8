import FeedArchive
import Foundation
import PostgresNIO

/// `backfill --from beginning`: the published tables as a snapshot (`SnapshotReader`), read
/// before the slot's changes.
extension PostgresSource {
    /// History before the slot is read as a snapshot of the published tables (see `SnapshotReader`).
    public func snapshotRange() async throws -> (from: ContinuationToken, until: ContinuationToken)? {
        (try await token(SnapshotReader.start), try await token(SnapshotReader.end))
    }

    func readSnapshot(after cursor: String, maxRecords: Int) async throws -> FeedPage {
        if cursor == SnapshotReader.end { return FeedPage(records: []) }
        do {
            if snapshot == nil || snapshot!.expect != cursor {
                if let snapshot { try? await snapshot.connection.close() }
                snapshot = nil
                let connection = try await connect()
                let control = try await controlConnection()
                let (settings, logger) = (settings, logger)
                do {
                    snapshot = try await withDeadline(
                        settings.queryTimeout, "take a snapshot of publication \(settings.publication)"
                    ) {
                        try await SnapshotReader.begin(
                            control: control, connection: connection, settings: settings, logger: logger, cursor: cursor
                        )
                    }
                } catch {
                    try? await connection.close()
                    try? await control.close()
                    self.control = nil
                    throw error
                }
            }
            let (reader, logger, limit) = (snapshot!, logger, max(1, maxRecords))
            let (page, advanced) = try await withDeadline(settings.queryTimeout, "read a snapshot page") {
                var reader = reader
                let page = try await reader.nextPage(maxRecords: limit, logger: logger)
                return (page, reader)
            }
            snapshot = advanced
            return page
        } catch {
            if let snapshot { try? await snapshot.connection.close() }
            snapshot = nil
            throw classify(error, doing: "read a snapshot of publication \(settings.publication)")
        }
    }
}
