import Foundation

/// Builds pages ahead of the caller on one background thread, up to `depth` pages, so reading
/// SQLite and building envelopes overlap with compression. Pages are built in feed order from
/// a chain of keys: each full page names the next. A request that is not the chain's next page
/// (the runner asked for a different size, or a new range) drops the chain and is built in the
/// caller's thread, after any build in flight has finished (the connection is not shared).
final class ReadAhead<Key: Equatable & Sendable, Page>: @unchecked Sendable {
    // @unchecked: every field is touched only while holding `condition`.
    private let condition = NSCondition()
    private var ready: [(key: Key, result: Result<Page, any Error>)] = []
    /// The key the worker builds next; nil when the chain ended or was dropped.
    private var next: Key?
    private var building: Key?
    private var workerRunning = false
    private var closed = false
    private let depth: Int
    private let build: @Sendable (Key) throws -> Page
    private let following: @Sendable (Key, Page) -> Key?

    /// `build` reads one page; `following` says which page comes after it (nil: the chain ends).
    init(
        depth: Int, build: @escaping @Sendable (Key) throws -> Page, following: @escaping @Sendable (Key, Page) -> Key?
    ) {
        self.depth = depth
        self.build = build
        self.following = following
    }

    /// The page for `key`: from the queue when it was built ahead, else built now.
    func page(_ key: Key) throws -> Page {
        condition.lock()
        while true {
            if let first = ready.first, first.key == key {
                ready.removeFirst()
                condition.broadcast()  // room for the worker
                condition.unlock()
                return try first.result.get()
            }
            let coming = building == key || (ready.isEmpty && next == key && workerRunning)
            if !coming { break }
            condition.wait()
        }
        // A miss: drop the chain, let a build in flight finish, build here, start a new chain.
        ready.removeAll()
        next = nil
        condition.broadcast()  // a worker waiting for room sees the chain is gone and ends
        while building != nil { condition.wait() }
        condition.unlock()
        let page = try build(key)
        if let after = following(key, page) { start(after) }
        return page
    }

    private func start(_ key: Key) {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { return }
        next = key
        if workerRunning {
            condition.broadcast()
            return
        }
        workerRunning = true
        let thread = Thread { [self] in work() }
        thread.name = "feedarchive-read-ahead"
        thread.start()
    }

    private func work() {
        condition.lock()
        while true {
            while !closed && next != nil && ready.count >= depth { condition.wait() }
            guard !closed, let key = next else {
                workerRunning = false
                condition.broadcast()
                condition.unlock()
                return
            }
            building = key
            condition.unlock()
            let result = Result { try build(key) }
            condition.lock()
            building = nil
            if next == key {  // still wanted (a miss clears `next` while we build)
                ready.append((key, result))
                if case .success(let page) = result { next = following(key, page) } else { next = nil }
            }
            condition.broadcast()
        }
    }

    /// Stops the worker after the build in flight; pages built ahead are dropped.
    func close() {
        condition.lock()
        closed = true
        ready.removeAll()
        next = nil
        condition.broadcast()
        while workerRunning { condition.wait() }
        condition.unlock()
    }
}
