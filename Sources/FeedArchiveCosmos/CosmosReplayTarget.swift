import FeedArchive
import Foundation
import NIOHTTP1

/// A replay into an Azure Cosmos DB container over REST, usually with another partition key
/// than the source's (a container-to-container migration).
///
/// ```yaml
/// target:
///   kind: cosmos
///   endpoint: https://myaccount.documents.azure.com:443/
///   key: ${COSMOS_KEY}            # or key_file: PATH; never printed
///   database: shop
///   container: orders_by_tenant   # exists, with this partition key path
///   partition_key: /tenantId
///   table: orders_by_tenant       # optional: the name --status shows (default: the container)
///   concurrency: 8                # optional: documents written at once
///   timeout: 30s                  # optional, per request
///   throttle_retries: 9           # optional: 429s waited out per request
/// ```
///
/// A change's `after` document is upserted (POST with `x-ms-documentdb-is-upsert`) into the
/// logical partition its own value at `partition_key` names, without the system properties
/// (`_rid`, `_etag`, `_ts`, `_self`, `_attachments`, `_lsn`). A document without `id` or
/// without that value goes to the dead letters. A delete carries no document, so the target's
/// partition key value comes, in this order, from the envelope's previous image (`before`),
/// from an upsert of the same id earlier in the batch, or else from a query of the target
/// (`SELECT * FROM c WHERE c.id = @id`, across partitions): every document of that id goes.
/// A document whose value at `partition_key` changed is deleted from its old partition when
/// the old value is known (a previous image, or an earlier change of the batch).
///
/// There is no transaction across partitions: within a batch the changes of one id are folded
/// (the last one wins), the ids are written `concurrency` at a time, and only then are the
/// dead letters and the positions written, to the document `_feedarchive_replay.<replay>`
/// (in the logical partition `_feedarchive` of the container). A replay killed in the middle
/// of a batch sends the batch again: upserts write the same documents, deletes of documents
/// already gone answer 404, which is fine. Dead letters are documents
/// `_feedarchive_replay_rejected.<replay>.<part>.<pos>` in the same logical partition, listed
/// in the positions document.
///
/// `reset` (`--from-scratch`) deletes the dead letters and the positions, not the documents:
/// replaying again upserts every document and applies every delete again, and a container
/// that must start empty is deleted and created again by its owner.
public final class CosmosReplayTarget: ReplayTarget {
    public let shape: ReplayShape
    let writer: Writer
    let replay: String

    /// What the child tasks of a batch share (Sendable: the client and the container's names).
    struct Writer: Sendable {
        let client: CosmosRESTClient
        let database: String
        let container: String
        let keyPath: [String]
        let keySetting: String
        let keyPlace: String?
        let retries = 6

        var containerLink: String { "dbs/\(database)/colls/\(container)" }
        var docsPath: String { containerLink + "/docs" }
        func docLink(_ id: String) -> String { docsPath + "/" + id }
    }

    /// The logical partition of the positions and dead letter documents.
    static let statePartition = "_feedarchive"

    init(writer: Writer, shape: ReplayShape, replay: String) {
        self.writer = writer
        self.shape = shape
        self.replay = replay
    }

    /// A target from a replay job's `target:` (kind cosmos). Reads the container to check that
    /// it exists and that its partition key path is `partition_key`.
    public static func make(_ job: ReplayJob) async throws -> CosmosReplayTarget {
        let map = try job.target.mapping("target")
        _ = map.optional("kind")
        let account = try CosmosSourceSettings.Account.parse(map, what: "target")
        func required(_ key: String) throws -> String {
            guard let node = map.optional(key) else {
                throw map.node.error("target is missing the required key '\(key)'")
            }
            let value = try node.string("target.\(key)")
            guard !value.isEmpty else { throw node.error("target.\(key) is empty") }
            return value
        }
        let database = try required("database")
        let container = try required("container")
        let keyNode = try map.required("partition_key")
        let keyText = try keyNode.string("target.partition_key")
        let keyPath = keyText.split(separator: "/").map(String.init)
        guard keyText.hasPrefix("/"), !keyPath.isEmpty, !keyText.hasSuffix("/") else {
            throw keyNode.error("target.partition_key must be a path such as /tenantId, not '\(keyText)'")
        }
        let table: String
        if let node = map.optional("table") {
            table = try node.string("target.table")
            guard isName(table) else {
                throw node.error(
                    "target.table must be letters, digits or '_' (not starting with a digit), not '\(table)'")
            }
        } else {
            guard isName(container) else {
                throw map.node.error(
                    "target.container '\(container)' is not a name --status can show: set target.table (letters, digits or '_')"
                )
            }
            table = container
        }
        var concurrency = 8
        if let node = map.optional("concurrency") {
            concurrency = try node.int("target.concurrency")
            guard (1...64).contains(concurrency) else { throw node.error("target.concurrency must be in 1...64") }
        }
        var timeout = 30.0
        if let node = map.optional("timeout") { timeout = try node.duration("target.timeout") }
        var throttleRetries = 9
        if let node = map.optional("throttle_retries") {
            throttleRetries = try node.int("target.throttle_retries")
            guard (0...100).contains(throttleRetries) else {
                throw node.error("target.throttle_retries must be in 0...100")
            }
        }
        try map.finish()
        let proxy: HTTPProxy?
        do {
            proxy = try HTTPProxy.resolve(for: account.endpoint, environment: ProcessInfo.processInfo.environment)
        } catch let invalid as HTTPProxy.Invalid {
            throw FeedArchiveError.badJobFile(
                place: "\(invalid.variable) (environment, for \(job.file))", message: invalid.message)
        }
        if let bundle = ProcessInfo.processInfo.environment["SSL_CERT_FILE"], !bundle.isEmpty,
            account.endpoint.scheme == "https", !FileManager.default.isReadableFile(atPath: bundle)
        {
            throw FeedArchiveError.badJobFile(
                place: "SSL_CERT_FILE (environment, for \(job.file))",
                message: "\(bundle) is not a readable file of PEM certificates")
        }
        let client = CosmosRESTClient(
            endpoint: account.endpoint, authorization: account.authorization, timeout: timeout,
            throttleRetries: throttleRetries, proxy: proxy)
        let writer = Writer(
            client: client, database: database, container: container, keyPath: keyPath,
            keySetting: account.keySetting, keyPlace: account.places["key"])
        let target = CosmosReplayTarget(writer: writer, shape: .documents(table: table), replay: job.name)
        target.concurrency = concurrency
        do {
            let response = try await writer.send(
                .GET, path: writer.containerLink, resourceType: "colls", resourceLink: writer.containerLink, body: nil)
            if response.status == 404 {
                throw FeedArchiveError.badJobFile(
                    place: keyNode.place,
                    message:
                        "container \(container) of database \(database) does not exist at \(account.endpoint.absoluteString) (HTTP 404): create it with partition key path \(keyText)"
                )
            }
            try writer.check(response, what: "container \(container) of database \(database)")
            let object = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any]
            let paths = (object?["partitionKey"] as? [String: Any])?["paths"] as? [String]
            if let actual = paths?.first, actual != keyText {
                throw keyNode.error(
                    "target.partition_key is \(keyText), but container \(container) is partitioned by \(actual)")
            }
        } catch {
            client.close()
            throw error
        }
        return target
    }

    /// Documents written at once.
    var concurrency = 8

    static func isName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }

    public func close() async { writer.client.close() }

    // MARK: - The positions document

    var stateID: String { "_feedarchive_replay." + replay }

    struct State {
        var positions: [String: String] = [:]
        var rejected: [String] = []
    }

    func readState() async throws -> State {
        let response = try await writer.send(
            .GET, path: writer.docLink(stateID), resourceType: "docs", resourceLink: writer.docLink(stateID),
            headers: ["x-ms-documentdb-partitionkey": Self.partitionKeyHeader(Self.stateKeyJSON)], body: nil)
        if response.status == 404 { return State() }
        try writer.check(response, what: "the replay's positions document \(stateID)")
        guard let object = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any] else {
            throw FeedArchiveError.data(
                path: nil, message: "\(writer.containerLink)/docs/\(stateID): the positions document is not JSON")
        }
        return State(
            positions: (object["positions"] as? [String: String]) ?? [:],
            rejected: (object["rejected"] as? [String]) ?? [])
    }

    func writeState(_ state: State) async throws {
        var object: [String: Any] = [
            "id": stateID, "replay": replay, "positions": state.positions, "rejected": state.rejected,
        ]
        Self.set(&object, writer.keyPath, Self.statePartition)
        let body = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try await writer.upsert(Array(body), keyJSON: Self.stateKeyJSON, what: "the positions document \(stateID)")
    }

    static var stateKeyJSON: String { "\"" + statePartition + "\"" }

    static func set(_ object: inout [String: Any], _ path: [String], _ value: Any) {
        guard let first = path.first else { return }
        if path.count == 1 {
            object[first] = value
            return
        }
        var inner = (object[first] as? [String: Any]) ?? [:]
        set(&inner, Array(path.dropFirst()), value)
        object[first] = inner
    }

    static func partitionKeyHeader(_ keyJSON: String) -> String { "[" + keyJSON + "]" }

    public func applied() async throws -> [String: String] {
        try await readState().positions
    }

    public func rejectedCount() async throws -> Int {
        try await readState().rejected.count
    }

    public func reset() async throws {
        let state = try await readState()
        for id in state.rejected {
            try await writer.delete(id: id, keyJSON: Self.stateKeyJSON)
        }
        try await writer.delete(id: stateID, keyJSON: Self.stateKeyJSON)
    }

    // MARK: - Applying a batch

    /// What is finally done to one document of the batch (after folding its changes).
    struct Plan: Sendable {
        var id: String
        /// The source's key (`{"id","pk"}`): documents of one id with different source keys
        /// are different documents.
        var sourceKey: String
        /// The upserted document (system properties stripped) and its partition key value, or
        /// nil for a delete.
        var upsert: (body: [UInt8], keyJSON: String)?
        /// Partition key values (JSON) the document had that it no longer has.
        var stale: Set<String> = []
        /// A delete whose partition key value is not known: the target is queried by id and
        /// every document of the id but the one upserted last goes.
        var lookUp = false
        /// The last change folded in, for a dead letter if the service refuses the document.
        var part: String
        var pos: String
        var keyText: [UInt8]
        var line: [UInt8]
    }

    struct DeadLetter: Sendable {
        var part: String
        var pos: String
        var keyText: [UInt8]
        var line: [UInt8]
        var reason: String
    }

    public func apply(_ changes: [ReplayChange], expecting: [String: String]) async throws -> ReplayTally {
        let writer = self.writer
        var state = try await readState()
        let done = state.positions
        if let rewound = replayRewound(done: done, expecting: expecting) { throw rewound }
        var tally = ReplayTally()
        var reached: [String: String] = [:]
        var letters: [DeadLetter] = []
        var plans: [Plan] = []
        var index: [String: Int] = [:]  // source key → plans index
        for change in changes {
            if let last = done[change.part], change.pos <= last { continue }
            reached[change.part] = change.pos
            func reject(_ reason: String) {
                letters.append(
                    DeadLetter(
                        part: change.part, pos: change.pos, keyText: Array(change.keyText), line: Array(change.line),
                        reason: reason))
            }
            switch change.action {
            case .pass:
                tally.passed += 1
                continue
            case .reject(let reason):
                reject(reason)
                continue
            case .truncate:
                reject("a cosmos target cannot empty its container (op t)")
                continue
            case .upsert, .delete:
                break
            }
            let sourceKey = String(decoding: change.keyText, as: UTF8.self)
            let before = Self.before(of: change.line)
            let previousKey = before.flatMap { Self.value(at: writer.keyPath, in: $0) }.flatMap(Self.keyJSON)
            var plan: Plan
            if let at = index[sourceKey] {
                plan = plans[at]
            } else {
                guard let id = JSONScan.field("id", in: change.keyText).flatMap(JSONScan.string) else {
                    reject("the change's key has no id")
                    continue
                }
                plan = Plan(
                    id: id, sourceKey: sourceKey, upsert: nil, part: change.part, pos: change.pos, keyText: [], line: []
                )
            }
            if let previousKey { plan.stale.insert(previousKey) }
            if let upserted = plan.upsert?.keyJSON { plan.stale.insert(upserted) }
            if change.action == .upsert {
                guard case .json(let document)? = change.values.first else {
                    reject("the change has no document")
                    continue
                }
                switch Self.prepare(document, keyPath: writer.keyPath) {
                case .failure(let reason):
                    reject(reason.text)
                    continue
                case .success(let (id, body, keyJSON)):
                    guard id == plan.id else {
                        reject("the document's id \(id) is not the id of the change's key (\(plan.id))")
                        continue
                    }
                    plan.upsert = (body, keyJSON)
                    plan.stale.remove(keyJSON)
                }
            } else {
                // Without a previous image or an upsert earlier in the batch, the partition the
                // document is in is not known; the query stays needed if the id comes back.
                if previousKey == nil && plan.upsert == nil { plan.lookUp = true }
                plan.upsert = nil
            }
            plan.part = change.part
            plan.pos = change.pos
            plan.keyText = Array(change.keyText)
            plan.line = Array(change.line)
            if let at = index[sourceKey] {
                plans[at] = plan
            } else {
                index[sourceKey] = plans.count
                plans.append(plan)
            }
            tally.applied += 1
        }
        // One task per id (its documents in order), `concurrency` ids at a time.
        var byID: [String: [Plan]] = [:]
        var order: [String] = []
        for plan in plans {
            if byID[plan.id] == nil { order.append(plan.id) }
            byID[plan.id, default: []].append(plan)
        }
        let refused = try await withThrowingTaskGroup(of: [DeadLetter].self) { group in
            var refused: [DeadLetter] = []
            var running = 0
            for id in order {
                let plansOfID = byID[id]!
                if running >= concurrency {
                    refused += try await group.next() ?? []
                    running -= 1
                }
                group.addTask {
                    var refused: [DeadLetter] = []
                    for plan in plansOfID {
                        if let reason = try await writer.carry(out: plan) {
                            refused.append(
                                DeadLetter(
                                    part: plan.part, pos: plan.pos, keyText: plan.keyText, line: plan.line,
                                    reason: reason))
                        }
                    }
                    return refused
                }
                running += 1
            }
            for try await more in group { refused += more }
            return refused
        }
        tally.applied -= refused.count
        letters += refused
        if !letters.isEmpty {
            let replay = self.replay
            let keyPath = writer.keyPath
            let ids = try await withThrowingTaskGroup(of: String.self) { group in
                var ids: [String] = []
                var running = 0
                for letter in letters {
                    if running >= concurrency {
                        if let id = try await group.next() { ids.append(id) }
                        running -= 1
                    }
                    group.addTask {
                        let id = CosmosReplayTarget.deadLetterID(replay: replay, part: letter.part, pos: letter.pos)
                        var object: [String: Any] = [
                            "id": id, "replay": replay, "part": letter.part, "pos": letter.pos,
                            "key": String(decoding: letter.keyText, as: UTF8.self), "reason": letter.reason,
                            "envelope": String(decoding: letter.line, as: UTF8.self),
                        ]
                        Self.set(&object, keyPath, Self.statePartition)
                        let body = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                        try await writer.upsert(Array(body), keyJSON: Self.stateKeyJSON, what: "dead letter \(id)")
                        return id
                    }
                    running += 1
                }
                for try await id in group { ids.append(id) }
                return ids
            }
            let known = Set(state.rejected)
            state.rejected += ids.filter { !known.contains($0) }.sorted()
            tally.rejected += letters.count
        }
        if !reached.isEmpty {
            state.positions.merge(reached) { _, new in new }
            try await writeState(state)
        }
        return tally
    }

    /// `_feedarchive_replay_rejected.<replay>.<part>.<pos>`, with the characters an id cannot
    /// hold (`/`, `\`, `?`, `#`) and control characters as `_`.
    static func deadLetterID(replay: String, part: String, pos: String) -> String {
        let text = "_feedarchive_replay_rejected.\(replay).\(part).\(pos)"
        return String(
            String.UnicodeScalarView(
                text.unicodeScalars.map { "/\\?#".unicodeScalars.contains($0) || $0.value < 0x20 ? "_" : $0 }))
    }

    /// The envelope's `before` (the previous image), nil when null.
    static func before(of line: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let bytes = Array(line)
        guard
            let ranges = try? bytes.withUnsafeBufferPointer({ try EnvelopeFields.split($0) }),
            ranges.count == 8
        else { return nil }
        let value = bytes[ranges[6]]
        return value.first == 0x7B ? value : nil
    }

    /// The value at a partition key path in a JSON object.
    static func value(at path: [String], in object: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        var current = object
        for segment in path {
            guard let value = JSONScan.field(segment, in: current) else { return nil }
            current = value
        }
        return current
    }

    /// A partition key value as the header's array holds it: a string, number, boolean or
    /// null (nil for an object or an array, which cannot be one).
    static func keyJSON(_ value: ArraySlice<UInt8>) -> String? {
        guard let first = value.first, first != 0x7B, first != 0x5B else { return nil }
        if first == 0x22 {
            // Re-encoded, so that one value has one text whatever its escapes.
            guard let text = JSONScan.string(value) else { return nil }
            return quote(text)
        }
        return String(decoding: value, as: UTF8.self)
    }

    static let systemProperties: Set<String> = ["_rid", "_etag", "_ts", "_self", "_attachments", "_lsn"]

    /// The document to upsert: its id, its text without the system properties, and its
    /// partition key value (JSON).
    static func prepare(_ document: ArraySlice<UInt8>, keyPath: [String]) -> Result<
        (String, [UInt8], String), ReplayReason
    > {
        guard let fields = JSONScan.fields(document) else {
            return .failure(ReplayReason("the document is not a JSON object"))
        }
        guard let idValue = fields.first(where: { $0.name == "id" })?.value, let id = JSONScan.string(idValue),
            !id.isEmpty
        else {
            return .failure(ReplayReason("the document has no id (a string)"))
        }
        let path = "/" + keyPath.joined(separator: "/")
        guard let value = Self.value(at: keyPath, in: document) else {
            return .failure(ReplayReason("the document has no value at the target's partition key path \(path)"))
        }
        guard let keyJSON = keyJSON(value) else {
            return .failure(ReplayReason("the value at \(path) is an object or an array, not a partition key value"))
        }
        var body: [UInt8] = [0x7B]
        for field in fields where !systemProperties.contains(field.name) {
            if body.count > 1 { body.append(0x2C) }
            body += Array(quote(field.name).utf8)
            body.append(0x3A)
            body += field.value
        }
        body.append(0x7D)
        return .success((id, body, keyJSON))
    }

    struct ReplayReason: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }

    /// A JSON string literal.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension CosmosReplayTarget.Writer {
    /// Sends a request; 503, 408, 449 and a connection that failed are sent again after a
    /// pause (every request of a replay is idempotent), a few times.
    func send(
        _ verb: HTTPMethod, path: String, resourceType: String, resourceLink: String,
        headers: [String: String] = [:], body: [UInt8]?
    ) async throws -> CosmosResponse {
        var attempt = 0
        while true {
            attempt += 1
            let response: CosmosResponse
            do {
                response = try await client.request(
                    verb, path: path, resourceType: resourceType, resourceLink: resourceLink, headers: headers,
                    body: body)
            } catch FeedArchiveError.sourceUnavailable where attempt < retries {
                try await Task.sleep(nanoseconds: UInt64(100_000_000) << min(attempt, 5))
                continue
            } catch FeedArchiveError.sourceUnavailable(let message) {
                throw FeedArchiveError.temporary("target unavailable: \(message)")
            }
            if [408, 449, 503].contains(response.status) && attempt < retries {
                let wait = Double(response.headers["x-ms-retry-after-ms"] ?? "").map { $0 / 1000 } ?? 0.1
                try await Task.sleep(nanoseconds: UInt64(max(wait, 0.1 * Double(1 << min(attempt, 5))) * 1e9))
                continue
            }
            return response
        }
    }

    /// Turns an answer that is neither a success nor the document's own fault into an error.
    func check(_ response: CosmosResponse, what: String) throws {
        let place = keyPlace.map { " (\(keySetting) is at \($0))" } ?? ""
        switch response.status {
        case 200..<300: return
        case 401:
            throw FeedArchiveError.sourceRefused(
                setting: keySetting,
                message:
                    "the target account refused the key for \(what) (HTTP 401): \(response.message.prefix(160))\(place)",
                hint:
                    "check \(keySetting): it must be one of the account's read-write keys as it is now; and check the clock: x-ms-date must be within 15 minutes of the service's"
            )
        case 403:
            throw FeedArchiveError.sourceRefused(
                setting: keySetting,
                message:
                    "the target account forbids \(what) (HTTP 403 substatus \(response.substatus)): \(response.message.prefix(200))\(place)",
                hint:
                    "\(keySetting) must be a read-write key of an account that accepts key authorization and lets this machine's address through"
            )
        case 404:
            throw FeedArchiveError.data(
                path: nil,
                message: "\(what): \(containerLink) does not exist (HTTP 404): \(response.message)",
                hint: "nothing after the last positions written was applied")
        case 408, 429, 449, 500..<600:
            throw FeedArchiveError.temporary(
                "target: \(what): HTTP \(response.status) substatus \(response.substatus): \(response.message)")
        default:
            throw FeedArchiveError.data(
                path: nil,
                message: "target: \(what): HTTP \(response.status) substatus \(response.substatus): \(response.message)"
            )
        }
    }

    func upsert(_ body: [UInt8], keyJSON: String, what: String) async throws {
        let response = try await upsertResponse(body, keyJSON: keyJSON)
        try check(response, what: what)
    }

    func upsertResponse(_ body: [UInt8], keyJSON: String) async throws -> CosmosResponse {
        try await send(
            .POST, path: docsPath, resourceType: "docs", resourceLink: containerLink,
            headers: [
                "x-ms-documentdb-is-upsert": "True",
                "x-ms-documentdb-partitionkey": CosmosReplayTarget.partitionKeyHeader(keyJSON),
                "Content-Type": "application/json",
            ], body: body)
    }

    /// Deletes a document; one that is not there is fine.
    func delete(id: String, keyJSON: String) async throws {
        let link = docLink(id)
        let response = try await send(
            .DELETE, path: link, resourceType: "docs", resourceLink: link,
            headers: ["x-ms-documentdb-partitionkey": CosmosReplayTarget.partitionKeyHeader(keyJSON)], body: nil)
        if response.status == 404 { return }
        try check(response, what: "the delete of document \(id)")
    }

    /// The partition key values (JSON) of the documents with this id, from a query across
    /// partitions (its pages followed to the end).
    func keys(of id: String) async throws -> [String] {
        let query: [String: Any] = [
            "query": "SELECT * FROM c WHERE c.id = @id", "parameters": [["name": "@id", "value": id]],
        ]
        let body = Array(try JSONSerialization.data(withJSONObject: query))
        var keys: [String] = []
        var continuation: String?
        repeat {
            var headers = [
                "x-ms-documentdb-isquery": "True", "Content-Type": "application/query+json",
                "x-ms-documentdb-query-enablecrosspartition": "True",
            ]
            if let continuation { headers["x-ms-continuation"] = continuation }
            let response = try await send(
                .POST, path: docsPath, resourceType: "docs", resourceLink: containerLink, headers: headers, body: body)
            try check(response, what: "the query for document \(id)")
            guard let documents = JSONScan.field("Documents", in: ArraySlice(response.body)) else {
                throw FeedArchiveError.data(
                    path: nil, message: "target: the query for document \(id): the answer has no Documents")
            }
            for document in Self.elements(documents) {
                if let value = CosmosReplayTarget.value(at: keyPath, in: document),
                    let key = CosmosReplayTarget.keyJSON(value), key != CosmosReplayTarget.stateKeyJSON
                {
                    keys.append(key)
                }
            }
            continuation = response.headers["x-ms-continuation"].flatMap { $0.isEmpty ? nil : $0 }
        } while continuation != nil
        return keys
    }

    /// The elements of a JSON array of objects.
    static func elements(_ array: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        let bytes = Array(array)
        guard bytes.first == 0x5B else { return [] }
        // Split by depth: the array holds objects only.
        var depth = 0
        var inString = false
        var escaped = false
        var start = -1
        var result: [ArraySlice<UInt8>] = []
        for (offset, byte) in bytes.enumerated() {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == 0x5C {
                    escaped = true
                } else if byte == 0x22 {
                    inString = false
                }
                continue
            }
            switch byte {
            case 0x22: inString = true
            case 0x7B, 0x5B:
                if depth == 1 && byte == 0x7B { start = offset }
                depth += 1
            case 0x7D, 0x5D:
                depth -= 1
                if depth == 1 && byte == 0x7D && start >= 0 {
                    result.append(bytes[start...offset])
                    start = -1
                }
            default: break
            }
        }
        return result
    }

    /// Carries out one document's plan; returns the reason when the service refuses the
    /// document itself (it then goes to the dead letters), throws when the target fails.
    func carry(out plan: CosmosReplayTarget.Plan) async throws -> String? {
        var stale = plan.stale
        if plan.lookUp { stale.formUnion(try await keys(of: plan.id)) }
        if let (body, keyJSON) = plan.upsert {
            stale.remove(keyJSON)
            let response = try await upsertResponse(body, keyJSON: keyJSON)
            switch response.status {
            case 200..<300: break
            case 400, 409, 412, 413:
                return
                    "the target refused the document (HTTP \(response.status) substatus \(response.substatus)): \(response.message)"
            default: try check(response, what: "the upsert of document \(plan.id)")
            }
        }
        for key in stale.sorted() {
            try await delete(id: plan.id, keyJSON: key)
        }
        return nil
    }
}
