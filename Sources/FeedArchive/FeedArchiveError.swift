import Foundation

/// Every failure feedarchive reports: what went wrong, where, and the exit code cron sees.
public enum FeedArchiveError: Error, CustomStringConvertible, Sendable {
    /// Wrong use of the command line (exit 64).
    case usage(String)
    /// The job file cannot be read or is invalid (exit 78); `place` is `file:line:column`.
    case badJobFile(place: String, message: String)
    /// The archive or a token is corrupt, or does not belong to this job/source (exit 65).
    case data(path: String?, message: String, hint: String? = nil)
    /// The source cannot be reached after retries (exit 69).
    case sourceUnavailable(String)
    /// The source refused the job's credentials or lacks a permission the job needs (exit 78):
    /// retrying cannot help, a person must fix `setting` in the job file or on the server.
    case sourceRefused(setting: String, message: String, hint: String? = nil)
    /// A file operation failed (exit 74): the operation, the path and the errno.
    case io(operation: String, path: String, errno: Int32)
    /// Another process holds the job lock (exit 75).
    case locked(path: String, holder: String)
    /// A temporary failure worth retrying later (exit 75).
    case temporary(String)
    /// The run stopped on SIGINT (130) or SIGTERM (143) after dropping the blob in progress.
    case interrupted(signal: Int32)

    /// The exit code DESIGN.md assigns to this failure.
    public var exitCode: Int32 {
        switch self {
        case .usage: 64
        case .badJobFile: 78
        case .data: 65
        case .sourceUnavailable: 69
        case .sourceRefused: 78
        case .io: 74
        case .locked, .temporary: 75
        case .interrupted(let signal): 128 + signal
        }
    }

    public var description: String {
        switch self {
        case .usage(let message): return message
        case .badJobFile(let place, let message): return "\(place): \(message)"
        case .data(let path, let message, let hint):
            var text = path.map { "\($0): \(message)" } ?? message
            if let hint { text += "\n  hint: \(hint)" }
            return text
        case .sourceUnavailable(let message): return "source unavailable: \(message)"
        case .sourceRefused(let setting, let message, let hint):
            var text = "\(setting): \(message)"
            if let hint { text += "\n  hint: \(hint)" }
            return text
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
        case .locked(let path, let holder):
            return "job is locked by another run (\(holder)); lock file \(path)"
        case .temporary(let message): return message
        case .interrupted(let signal):
            return
                "interrupted by \(signal == SIGINT ? "SIGINT" : "SIGTERM"); the blob in progress was dropped, committed blobs are kept"
        }
    }
}

extension FeedArchiveError {
    /// Whether another attempt may succeed: the source was unreachable or asked us to come back.
    /// Refused credentials or permissions, bad job files, data and I/O errors are never retried.
    public var isRetryable: Bool {
        switch self {
        case .sourceUnavailable, .temporary: true
        default: false
        }
    }

    /// What the operator can do next, when the error knows.
    public var hint: String? {
        switch self {
        case .data(_, _, let hint), .sourceRefused(_, _, let hint): hint
        default: nil
        }
    }
}
