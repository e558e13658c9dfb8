import FeedArchive
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A small HTTP/1.1 client over SwiftNIO, for the Cosmos DB REST API: GET requests on
/// keep-alive connections, TLS for `https` (the system's trust roots, the host name checked),
/// and a time limit per request.
///
/// Why not URLSession: on Linux it is FoundationNetworking over libcurl, and linking it cost
/// every command ~12 ms of start-up (libcurl and the ~30 libraries it loads), SQLite and
/// PostgreSQL runs included. SwiftNIO is linked anyway (the PostgreSQL source). Not supported,
/// unlike libcurl: `HTTPS_PROXY` and other proxy settings.
final class HTTPClient: Sendable {
    struct Response {
        var status: Int
        /// Header names lower-cased.
        var headers: [String: String]
        var body: ByteBuffer
    }

    enum Failure: Error, CustomStringConvertible {
        case timedOut(Double)
        case closedEarly
        case badResponse(String)

        var description: String {
            switch self {
            case .timedOut(let seconds): "timed out after \(Int(seconds)) s"
            case .closedEarly: "the server closed the connection before it answered"
            case .badResponse(let text): text
            }
        }
    }

    let host: String
    let port: Int
    let timeout: Double
    let secure: Bool
    /// The path every request target starts with (the endpoint's, ending in `/`).
    let basePath: String
    /// Made with the first `https` connection (it reads the system's trust roots).
    private let tls = Mutex<NIOSSLContext?>(nil)
    private let hostHeader: String
    /// Connections whose last exchange ended cleanly, for reuse; none once `closeIdle` ran.
    private let idle = Mutex<[Connection]>([])
    private let closed = Atomic<Bool>(false)
    static let keepIdle = 8

    /// `endpoint` is an http(s) URL with a host (`CosmosSourceSettings` checks it).
    init(endpoint: URL, timeout: Double) {
        host = endpoint.host ?? "localhost"
        secure = endpoint.scheme == "https"
        port = endpoint.port ?? (secure ? 443 : 80)
        self.timeout = timeout
        let path = endpoint.path
        basePath = path.hasSuffix("/") ? path : path + "/"
        let name = host.contains(":") ? "[\(host)]" : host  // an IPv6 literal
        hostHeader = endpoint.port == nil ? name : "\(name):\(port)"
    }

    private func tlsContext() throws -> NIOSSLContext {
        try tls.withLock { context in
            if let context { return context }
            let made = try NIOSSLContext(configuration: .makeClientConfiguration())
            context = made
            return made
        }
    }

    deinit {
        for connection in idle.withLock({ $0 }) { connection.channel.close(promise: nil) }
    }

    /// Drops the idle connections; requests still running finish on theirs, which are then
    /// closed too.
    func closeIdle() {
        closed.store(true, ordering: .relaxed)
        let connections = idle.withLock { idle in
            defer { idle.removeAll() }
            return idle
        }
        for connection in connections { connection.channel.close(promise: nil) }
    }

    /// GET `target` (a path from the server's root). A reused connection that fails before
    /// the answer (closed or reset by the server or a load balancer while it was idle) is
    /// replaced once by a new one: the request is idempotent. A time-out is not retried.
    func get(_ target: String, headers: [(String, String)]) async throws -> Response {
        if let reused = idle.withLock({ $0.popLast() }) {
            do {
                return try await exchange(on: reused, target: target, headers: headers)
            } catch Failure.timedOut(let seconds) {
                throw Failure.timedOut(seconds)
            } catch {
                // Go on with a new connection.
            }
        }
        return try await exchange(on: try await connect(), target: target, headers: headers)
    }

    private func exchange(on connection: Connection, target: String, headers: [(String, String)]) async throws -> Response {
        var request = HTTPRequestHead(version: .http1_1, method: .GET, uri: target)
        request.headers.add(name: "Host", value: hostHeader)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let head = request
        let channel = connection.channel
        let collector = connection.collector
        let timeout = self.timeout
        let result = channel.eventLoop.flatSubmit { () -> EventLoopFuture<Response> in
            let promise = channel.eventLoop.makePromise(of: Response.self)
            guard channel.isActive else {
                promise.fail(Failure.closedEarly)  // an idle connection the server closed
                return promise.futureResult
            }
            collector.expect(promise)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
                promise.fail(Failure.timedOut(timeout))
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            return promise.futureResult
        }
        do {
            let response = try await result.get()
            let keep = response.headers["connection"]?.lowercased() != "close"
            if keep && channel.isActive && !closed.load(ordering: .relaxed) && idle.withLock({ idle in
                guard idle.count < Self.keepIdle else { return false }
                idle.append(connection)
                return true
            }) {
                return response
            }
            channel.close(promise: nil)
            return response
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }

    private func connect() async throws -> Connection {
        let collector = ResponseCollector()
        let tls = secure ? try tlsContext() : nil
        // No SNI for an address literal (RFC 6066); the certificate is still checked against it.
        let serverName = (try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.milliseconds(Int64(timeout * 1000)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName)) }
                    try pipeline.addHTTPClientHandlers()
                    try pipeline.addHandler(collector)
                }
            }
            .connect(host: host, port: port).get()
        return Connection(channel: channel, collector: collector)
    }

    struct Connection: Sendable {
        let channel: any Channel
        let collector: ResponseCollector
    }
}

/// Gathers one response at a time into the promise the client set. Touched only on its
/// channel's event loop (hence `@unchecked Sendable`: the client holds it to reach it there).
final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private var promise: EventLoopPromise<HTTPClient.Response>?
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()
    private var answered = false

    func expect(_ promise: EventLoopPromise<HTTPClient.Response>) {
        self.promise = promise
        head = nil
        body.clear()
        answered = false
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        answered = true
        switch unwrapInboundIn(data) {
        case .head(let received):
            head = received
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            guard let head, let promise else { return }
            self.promise = nil
            var fields: [String: String] = [:]
            for (name, value) in head.headers { fields[name.lowercased()] = value }
            promise.succeed(HTTPClient.Response(status: Int(head.status.code), headers: fields, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(answered ? HTTPClient.Failure.badResponse("the server closed the connection in the middle of its answer") : HTTPClient.Failure.closedEarly)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        promise?.fail(error)
        promise = nil
    }
}
