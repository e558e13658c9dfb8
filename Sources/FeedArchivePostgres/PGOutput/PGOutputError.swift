/// A malformed pgoutput message: the server and this decoder disagree about the protocol.
struct PGOutputError: Error, CustomStringConvertible {
    var message: String
    var description: String { "pgoutput: \(message)" }
}
