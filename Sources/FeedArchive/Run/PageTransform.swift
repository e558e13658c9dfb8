import Foundation

/// A page's records transformed ahead of the batcher by a helper thread and the reading
/// thread together. The page is cut into chunks; each thread claims the next chunk nobody has
/// taken, so the reading thread transforms what the helper has not reached and waits only for
/// a chunk the helper is working on. The outcome of each record is what `Transform.apply`
/// gives it on its own: the steps are a function of the record.
final class PageTransform: @unchecked Sendable {
    // @unchecked: a chunk is written only by the thread that claimed it, and read only after it
    // is marked done; claims and marks are made under `condition`.

    /// One record's outcome: its transformed line (`range` in its chunk's output), the filter
    /// that dropped it, the reason the steps could not take it, or an envelope error.
    struct Outcome: Sendable {
        var filteredBy: Int?
        var rejection: String?
        var failure: (any Error)?
        var path: String?
        var range: Range<Int> = 0..<0
    }

    final class Chunk: @unchecked Sendable {
        var outcomes: [Outcome] = []
        var output: [UInt8] = []
    }

    enum State { case open, claimed, done }

    static let chunkSize = 256

    let records: [FeedRecord]
    /// Where each line holds the envelope's values, when the source kept them.
    let fields: [EnvelopeFields.Ranges]
    let transform: Transform
    private let chunks: [Chunk]
    private var states: [State]
    private var next = 0
    private let condition = NSCondition()
    /// The last chunk the reading thread knows is done (only the reading thread uses it).
    private var ready = -1

    init(page: FeedPage, transform: Transform) {
        self.records = page.records
        // Offsets that do not go with every record are not trusted: the steps find their own.
        self.fields = page.fields.count == page.records.count ? page.fields : []
        self.transform = transform
        let count = (records.count + Self.chunkSize - 1) / Self.chunkSize
        chunks = (0..<count).map { _ in Chunk() }
        states = Array(repeating: .open, count: count)
        if count > 1 { DispatchQueue.global().async { self.help() } }
    }

    /// The outcome of record `index` and the output its range is in; called by the reading
    /// thread, with indices in order.
    func outcome(_ index: Int) -> (Outcome, Chunk) {
        let number = index / Self.chunkSize
        if number > ready {
            if claim(number) != nil {
                compute(number)
                finish(number)
            } else {
                condition.lock()
                while states[number] != .done { condition.wait() }
                condition.unlock()
            }
            ready = number
        }
        let chunk = chunks[number]
        return (chunk.outcomes[index - number * Self.chunkSize], chunk)
    }

    /// The reading thread is done with the page (read through, or stopped): the helper takes
    /// no more chunks.
    func cancel() {
        condition.lock()
        cancelled = true
        condition.unlock()
    }
    private var cancelled = false

    /// Claims chunk `wanted`, or the next open chunk when nil (none once cancelled); nil when
    /// it is taken.
    private func claim(_ wanted: Int?) -> Int? {
        condition.lock()
        defer { condition.unlock() }
        if let wanted {
            guard states[wanted] == .open else { return nil }
            states[wanted] = .claimed
            return wanted
        }
        if cancelled { return nil }
        while next < states.count && states[next] != .open { next += 1 }
        guard next < states.count else { return nil }
        states[next] = .claimed
        return next
    }

    private func finish(_ number: Int) {
        condition.lock()
        states[number] = .done
        condition.broadcast()
        condition.unlock()
    }

    private func help() {
        while let number = claim(nil) {
            compute(number)
            finish(number)
        }
    }

    private func compute(_ number: Int) {
        let chunk = chunks[number]
        let start = number * Self.chunkSize
        let end = min(records.count, start + Self.chunkSize)
        chunk.outcomes.reserveCapacity(end - start)
        var bytes = 0
        for index in start..<end { bytes += records[index].line.count }
        chunk.output.reserveCapacity(bytes + bytes / 4)
        var scratch: [UInt8] = []
        for index in start..<end {
            var outcome = Outcome()
            var path: String?
            let first = chunk.output.count
            do {
                outcome.filteredBy = try transform.apply(
                    records[index].line, fields: fields.isEmpty ? nil : fields[index], appendingTo: &chunk.output,
                    path: &path, scratch: &scratch)
                outcome.range = first..<chunk.output.count
            } catch let failure as Transform.Failure {
                outcome.rejection = failure.description
            } catch {
                outcome.failure = error
            }
            outcome.path = path
            chunk.outcomes.append(outcome)
        }
    }
}
