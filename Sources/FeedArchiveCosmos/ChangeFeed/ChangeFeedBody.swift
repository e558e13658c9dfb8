import FeedArchive
import Foundation

/// A byte-level reader of one change feed response body (`{"_rid":…,"Documents":[…],"_count":n}`):
/// finds each item's bytes and the few fields feedarchive needs, without decoding the documents,
/// so `after` can be the document's own bytes. One pass over the items: each is handed over
/// with its members as soon as its closing brace is found.
struct ChangeFeedBody {
    let scanner: ChangeFeedScanner

    /// Calls `body` with each item of the `Documents` array, in order: its byte range and its
    /// members (a scratch array reused from item to item).
    func forEachItem(_ body: (Range<Int>, [ChangeFeedScanner.Member]) throws -> Void) throws {
        let bytes = scanner.bytes
        let end = bytes.count
        var index = 0
        scanner.skipSpace(&index, end)
        guard index < end, bytes[index] == 0x7B else { throw scanner.failure("the body is not a JSON object") }
        index += 1
        var sawDocuments = false
        var members: [ChangeFeedScanner.Member] = []
        members.reserveCapacity(16)
        while true {
            scanner.skipSpace(&index, end)
            guard index < end else { throw scanner.failure("the body is not closed") }
            if bytes[index] == 0x7D { break }
            guard bytes[index] == 0x22 else { throw scanner.failure("an object key is missing at byte \(index)") }
            let keyStart = index + 1
            try scanner.string(&index, end)
            let isDocuments = scanner.keyEquals(keyStart..<(index - 1), "Documents")
            scanner.skipSpace(&index, end)
            guard index < end, bytes[index] == 0x3A else { throw scanner.failure("':' is missing at byte \(index)") }
            index += 1
            scanner.skipSpace(&index, end)
            if isDocuments {
                guard !sawDocuments else { throw scanner.failure("the body has two Documents arrays") }
                guard index < end, bytes[index] == 0x5B else { throw scanner.failure("Documents is not an array") }
                sawDocuments = true
                index += 1
                scanner.skipSpace(&index, end)
                if index < end, bytes[index] == 0x5D {
                    index += 1
                } else {
                    while true {
                        scanner.skipSpace(&index, end)
                        let start = index
                        guard try scanner.members(at: &index, end, into: &members) else {
                            throw scanner.failure("an item of Documents is not an object")
                        }
                        try body(start..<index, members)
                        scanner.skipSpace(&index, end)
                        guard index < end else { throw scanner.failure("an array is not closed") }
                        if bytes[index] == 0x2C {
                            index += 1
                            continue
                        }
                        if bytes[index] == 0x5D {
                            index += 1
                            break
                        }
                        throw scanner.failure("',' or ']' expected at byte \(index)")
                    }
                }
            } else {
                _ = try scanner.value(&index, end)
            }
            scanner.skipSpace(&index, end)
            guard index < end else { throw scanner.failure("the body is not closed") }
            if bytes[index] == 0x2C {
                index += 1
                continue
            }
            if bytes[index] == 0x7D { break }
            throw scanner.failure("',' or '}' expected at byte \(index)")
        }
        guard sawDocuments else { throw scanner.failure("the body has no Documents array") }
    }
}
