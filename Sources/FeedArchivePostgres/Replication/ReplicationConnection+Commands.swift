import FeedArchive
import Foundation
import NIOCore

extension ReplicationConnection {
    /// Runs one replication command that answers with rows (`IDENTIFY_SYSTEM`,
    /// `TIMELINE_HISTORY n`) and returns them, each field as its raw bytes (nil for NULL).
    func command(_ text: String) async throws -> [[[UInt8]?]] {
        send(type: "Q") { $0.writeNullTerminatedString(text) }
        var rows: [[[UInt8]?]] = []
        var failure: ServerError?
        while true {
            let (type, body) = try await nextMessage()
            switch type {
            case UInt8(ascii: "D"):
                var body = body
                guard let count = body.readInteger(as: Int16.self), count >= 0 else {
                    throw Failure.protocolViolation("a DataRow without a column count")
                }
                var row: [[UInt8]?] = []
                for _ in 0..<count {
                    guard let length = body.readInteger(as: Int32.self) else {
                        throw Failure.protocolViolation("a DataRow cut short")
                    }
                    if length < 0 {
                        row.append(nil)
                    } else {
                        guard let bytes = body.readBytes(length: Int(length)) else {
                            throw Failure.protocolViolation("a DataRow cut short")
                        }
                        row.append(bytes)
                    }
                }
                rows.append(row)
            case UInt8(ascii: "E"): failure = Self.serverError(body)
            case UInt8(ascii: "Z"):
                if let failure { throw failure }
                return rows
            default: continue
            }
        }
    }
}
