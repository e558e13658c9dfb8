import FeedArchive
import Foundation
import PostgresNIO

/// What a failure means for the run: retried, refused, or a problem with the data.
extension PostgresSource {
    /// Connection trouble is transient (retried); what the server refuses is not, and refused
    /// credentials or privileges name the job-file setting to fix (never retried).
    func classify(_ error: any Error, doing what: String) -> FeedArchiveError {
        if let error = error as? FeedArchiveError { return error }
        if let error = error as? ReplicationConnection.ServerError {
            return classify(
                state: error.sqlState, message: error.message, detail: error.detail, hint: error.hint, doing: what)
        }
        if let error = error as? PSQLError {
            if let info = error.serverInfo {
                return classify(
                    state: info[.sqlState] ?? "", message: info[.message] ?? "server error", detail: info[.detail],
                    hint: info[.hint], doing: what)
            }
            if error.code == .authMechanismRequiresPassword {
                return .sourceRefused(
                    setting: settings.passwordKey,
                    message:
                        "\(what): the server asks user \"\(settings.user)\" for a password, and \(settings.passwordKey) is not set",
                    hint: "set \(settings.passwordKey) (or source.password: ${ENV_VAR}) for the job")
            }
            let underlying = error.underlying.map { ": \($0)" } ?? ""
            return .sourceUnavailable("\(what): \(error.code)\(underlying)")
        }
        return .sourceUnavailable("\(what): \(error)")
    }

    /// A server error by its SQLSTATE: connection trouble and contention are transient;
    /// authentication (class 28) and privileges (42501) are refusals a person must fix.
    func classify(state: String, message: String, detail: String?, hint: String?, doing what: String)
        -> FeedArchiveError
    {
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
        case "28P01":  // invalid_password
            return .sourceRefused(
                setting: settings.passwordKey, message: "\(what): \(message) [\(state)]",
                hint:
                    "the server refused the password of user \(settings.user): correct \(settings.passwordKey), or the role's password on the server"
            )
        case "28000":  // invalid_authorization_specification: no such role, no pg_hba.conf line, no LOGIN
            return .sourceRefused(
                setting: "source.user", message: "\(what): \(message) [\(state)]",
                hint:
                    "check that role \(settings.user) exists and may log in (LOGIN), and that pg_hba.conf lets it connect to database \(settings.database) from this host"
            )
        case "42501":  // insufficient_privilege
            return .sourceRefused(
                setting: "source.user", message: "\(what): \(message) [\(state)]", hint: privilegeHint(message))
        default:
            return .data(path: nil, message: "\(what): \(message) [\(state)]")
        }
    }

    /// What to grant for an insufficient privilege, by what the server says is missing.
    func privilegeHint(_ message: String) -> String {
        let text = message.lowercased()
        let user = settings.user
        if text.contains("replication") || text.contains("wal sender") || text.contains("walsender") {
            return
                "reading a replication slot needs the REPLICATION attribute: `ALTER ROLE \(user) REPLICATION` (on a managed service, grant its replication role), or run the job as a role that has it"
        }
        if text.contains("must be owner") {
            return
                "only the tables' owner can publish them: run `feedarchive setup JOB` with their owner as source.user, or create publication \(settings.publication) as that owner"
        }
        if text.contains("permission denied for database") {
            return
                "creating publication \(settings.publication) needs `GRANT CREATE ON DATABASE \(settings.database) TO \(user)`, or run `feedarchive setup JOB` as a role that has it"
        }
        if text.contains("permission denied for table") || text.contains("permission denied for relation")
            || text.contains("permission denied for schema")
        {
            return
                "a snapshot backfill reads the published tables: `GRANT SELECT ON <table> TO \(user)` (and `GRANT USAGE ON SCHEMA <schema> TO \(user)`)"
        }
        return "grant \(user) the privilege the message names, or run the job as a role that has it"
    }
}
