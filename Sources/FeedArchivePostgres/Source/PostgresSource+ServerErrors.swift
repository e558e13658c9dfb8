import FeedArchive
import Foundation
import PostgresNIO

/// What a failure means for the run: retried, refused, or a problem with the data.
extension PostgresSource {
    /// Connection trouble is transient (retried); what the server refuses is not.
    func classify(_ error: any Error, doing what: String) -> FeedArchiveError {
        if let error = error as? FeedArchiveError { return error }
        if let error = error as? ReplicationConnection.ServerError {
            return classify(state: error.sqlState, message: error.message, detail: error.detail, hint: error.hint, doing: what)
        }
        if let error = error as? PSQLError {
            if let info = error.serverInfo {
                return classify(state: info[.sqlState] ?? "", message: info[.message] ?? "server error", detail: info[.detail], hint: info[.hint], doing: what)
            }
            let underlying = error.underlying.map { ": \($0)" } ?? ""
            return .sourceUnavailable("\(what): \(error.code)\(underlying)")
        }
        return .sourceUnavailable("\(what): \(error)")
    }

    /// A server error by its SQLSTATE: connection trouble and contention are transient.
    func classify(state: String, message: String, detail: String?, hint: String?, doing what: String) -> FeedArchiveError {
        var message = message
        if let detail { message += " (\(detail))" }
        if let hint { message += "; hint: \(hint)" }
        switch state {
        case "55006":  // object in use: the slot is read by another process
            return .temporary("\(what): \(message) [\(state)]: another process is reading slot \(settings.slot)")
        case "55P03":  // lock not available (the snapshot's lock_timeout)
            return .temporary("\(what): \(message) [\(state)]")
        case _ where ["08", "40", "53", "57", "58"].contains(String(state.prefix(2))):
            // connection, transaction rollback (serialization, deadlock), resources,
            // operator intervention (shutdown, cancel, timeout), system errors: transient
            return .sourceUnavailable("\(what): \(message) [\(state)]")
        case "28P01", "28000":
            return .sourceUnavailable("\(what): \(message) [\(state)] (check source.user and source.password)")
        default:
            return .data(path: nil, message: "\(what): \(message) [\(state)]")
        }
    }
}
