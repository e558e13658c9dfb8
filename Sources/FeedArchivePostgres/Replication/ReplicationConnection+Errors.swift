import Foundation

extension ReplicationConnection {
    /// What went wrong on the connection itself (server errors are `ServerError`).
    enum Failure: Error, CustomStringConvertible {
        case closed
        case protocolViolation(String)
        case timedOut(Double)
        case unsupported(String)
        case connect(String, Int32)
        case io(String, Int32)

        var description: String {
            switch self {
            case .closed: "the server closed the replication connection"
            case .protocolViolation(let text): "protocol violation: \(text)"
            case .timedOut(let seconds): "no message from the server within \(Int(seconds)) s (source.query_timeout)"
            case .unsupported(let text): text
            case .connect(let path, let code): "cannot connect to \(path): \(String(cString: strerror(code)))"
            case .io(let call, let code):
                "\(call) on the replication connection failed: \(String(cString: strerror(code)))"
            }
        }
    }

    /// An ErrorResponse, with its fields by code (`C` SQLSTATE, `M` message, `D`, `H`).
    struct ServerError: Error, CustomStringConvertible {
        var fields: [UInt8: String]
        var sqlState: String { fields[UInt8(ascii: "C")] ?? "" }
        var message: String { fields[UInt8(ascii: "M")] ?? "server error" }
        var detail: String? { fields[UInt8(ascii: "D")] }
        var hint: String? { fields[UInt8(ascii: "H")] }
        var description: String { "\(message) [\(sqlState)]" }
    }
}
