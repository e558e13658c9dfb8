import Foundation
import Testing

@testable import FeedArchiveSQLite

/// The read-ahead queue: pages come back in order whether built ahead or not, a request off
/// the chain is answered correctly, and errors reach the caller.
@Suite struct ReadAheadTests {
    /// Which pages were built, from any thread.
    final class BuildLog: @unchecked Sendable {
        private let lock = NSLock()
        private var keys: [Int] = []
        func add(_ key: Int) { lock.withLock { keys.append(key) } }
        var all: [Int] { lock.withLock { keys } }
    }

    /// Pages are the numbers `from..<from+4`; the chain ends at 40.
    static func make(built: BuildLog, failAt: Int? = nil) -> ReadAhead<Int, [Int]> {
        ReadAhead<Int, [Int]>(
            depth: 3,
            build: { from in
                built.add(from)
                if from == failAt { throw CancellationError() }
                return Array(from..<min(from + 4, 40))
            },
            following: { from, page in page.count == 4 && from + 4 < 40 ? from + 4 : nil })
    }

    @Test func pagesComeInOrderAndTheChainIsBuiltAhead() throws {
        let built = BuildLog()
        let queue = Self.make(built: built)
        defer { queue.close() }
        var seen: [Int] = []
        var key = 0
        while key < 40 {
            let page = try queue.page(key)
            #expect(page.first == key)
            seen += page
            key += 4
        }
        #expect(seen == Array(0..<40))
        // Each page was built once: the caller's first, the rest ahead of it.
        #expect(built.all == Array(stride(from: 0, to: 40, by: 4)))
    }

    @Test func aRequestOffTheChainIsBuiltForItself() throws {
        let built = BuildLog()
        let queue = Self.make(built: built)
        defer { queue.close() }
        #expect(try queue.page(0) == [0, 1, 2, 3])
        #expect(try queue.page(2) == [2, 3, 4, 5])  // not the next page of the chain
        #expect(try queue.page(6) == [6, 7, 8, 9])  // the new chain's next page
        #expect(try queue.page(30) == [30, 31, 32, 33])
        #expect(built.all.filter { $0 == 2 || $0 == 30 }.count == 2)
    }

    @Test func anErrorBuildingAheadReachesTheCaller() throws {
        let built = BuildLog()
        let queue = Self.make(built: built, failAt: 8)
        defer { queue.close() }
        _ = try queue.page(0)
        _ = try queue.page(4)
        #expect(throws: CancellationError.self) { try queue.page(8) }
    }
}
