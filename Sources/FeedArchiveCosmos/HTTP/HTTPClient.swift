import FeedArchive
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A small HTTP/1.1 client over SwiftNIO, for the Cosmos DB REST API: requests on
/// keep-alive connections, TLS for `https` (the system's trust roots and the bundle
/// `SSL_CERT_FILE` names; the host name checked), an optional HTTP proxy (`HTTPProxy`: a
/// `CONNECT` tunnel for https), and a time limit per request.
///
/// Why not URLSession: on Linux it is FoundationNetworking over libcurl, and linking it costs
/// every command ~12 ms of start-up (libcurl and the ~30 libraries it loads), SQLite and
/// PostgreSQL runs included. SwiftNIO is linked anyway (the PostgreSQL source).
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
        case proxyRefused(String)

        var description: String {
            switch self {
            case .timedOut(let seconds): "timed out after \(Int(seconds)) s"
            case .closedEarly: "the server closed the connection before it answered"
            case .badResponse(let text): text
            case .proxyRefused(let text): text
            }
        }
    }

    let host: String
    let port: Int
    let timeout: Double
    let secure: Bool
    /// The path every request target starts with (the endpoint's, ending in `/`).
    let basePath: String
    let proxy: HTTPProxy?
    /// PEM trust roots added to the system's (`SSL_CERT_FILE`).
    let certificateBundle: String?
    /// Made with the first `https` connection (it reads the system's trust roots).
    private let tls = Mutex<NIOSSLContext?>(nil)
    private let hostHeader: String
    /// `host:port`, what a proxy is asked to tunnel to.
    private let authority: String
    /// Connections whose last exchange ended cleanly, for reuse; none once `closeIdle` ran.
    private let idle = Mutex<[Connection]>([])
    private let closed = Atomic<Bool>(false)
    static let keepIdle = 8

    /// `endpoint` is an http(s) URL with a host (`CosmosSourceSettings` checks it).
    init(
        endpoint: URL, timeout: Double, proxy: HTTPProxy? = nil,
        certificateBundle: String? = ProcessInfo.processInfo.environment["SSL_CERT_FILE"]
    ) {
        self.proxy = proxy
        self.certificateBundle = certificateBundle.flatMap { $0.isEmpty ? nil : $0 }
        host = endpoint.host ?? "localhost"
        secure = endpoint.scheme == "https"
        port = endpoint.port ?? (secure ? 443 : 80)
        self.timeout = timeout
        let path = endpoint.path
        basePath = path.hasSuffix("/") ? path : path + "/"
        let name = host.contains(":") ? "[\(host)]" : host  // an IPv6 literal
        hostHeader = endpoint.port == nil ? name : "\(name):\(port)"
        authority = "\(name):\(port)"
    }

    private func tlsContext() throws -> NIOSSLContext {
        try tls.withLock { context in
            if let context { return context }
            var configuration = TLSConfiguration.makeClientConfiguration()
            // Added to the system's roots, as OpenSSL adds SSL_CERT_FILE to its default directory.
            if let certificateBundle { configuration.additionalTrustRoots = [.file(certificateBundle)] }
            let made = try NIOSSLContext(configuration: configuration)
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
        try await request(.GET, target, headers: headers, body: nil)
    }

    /// `method` on `target` with an optional body (sent with its Content-Length). Only for
    /// requests that are idempotent (an upsert, a delete, a read, a query): a reused connection
    /// that fails before the answer is replaced once by a new one, as for `get`.
    func request(_ method: HTTPMethod, _ target: String, headers: [(String, String)], body: [UInt8]?) async throws
        -> Response
    {
        if let reused = idle.withLock({ $0.popLast() }) {
            do {
                return try await exchange(on: reused, method: method, target: target, headers: headers, body: body)
            } catch Failure.timedOut(let seconds) {
                throw Failure.timedOut(seconds)
            } catch {
                // Go on with a new connection.
            }
        }
        return try await exchange(
            on: try await connect(), method: method, target: target, headers: headers, body: body)
    }

    private func exchange(
        on connection: Connection, method: HTTPMethod, target: String, headers: [(String, String)], body: [UInt8]?
    ) async throws -> Response {
        // Through a proxy, plain http asks the proxy for the absolute URL (https is tunnelled).
        let plainProxy = secure ? nil : proxy
        var request = HTTPRequestHead(
            version: .http1_1, method: method, uri: plainProxy == nil ? target : "http://\(hostHeader)\(target)")
        request.headers.add(name: "Host", value: hostHeader)
        if let authorization = plainProxy?.authorization {
            request.headers.add(name: "Proxy-Authorization", value: authorization)
        }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.headers.add(name: "Content-Length", value: String(body.count)) }
        let head = request
        let channel = connection.channel
        let collector = connection.collector
        let timeout = self.timeout
        let result = channel.eventLoop.flatSubmit { () -> EventLoopFuture<Response> in
            let promise = channel.eventLoop.makePromise(of: Response.self)
            if let failure = collector.failure {
                promise.fail(failure)
                return promise.futureResult
            }
            guard channel.isActive else {
                promise.fail(Failure.closedEarly)  // an idle connection the server closed
                return promise.futureResult
            }
            collector.expect(promise)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body, !body.isEmpty {
                channel.write(
                    HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil)
            }
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
            if keep && channel.isActive && !closed.load(ordering: .relaxed)
                && idle.withLock({ idle in
                    guard idle.count < Self.keepIdle else { return false }
                    idle.append(connection)
                    return true
                })
            {
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
        let tunnel = secure ? proxy : nil
        @Sendable func addHandlers(_ channel: any Channel) throws {
            let pipeline = channel.pipeline.syncOperations
            if let tls { try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName)) }
            try pipeline.addHTTPClientHandlers()
            try pipeline.addHandler(collector)
        }
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.milliseconds(Int64(timeout * 1000)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if tunnel == nil { try addHandlers(channel) }
                }
            }
            .connect(host: proxy?.host ?? host, port: proxy?.port ?? port).get()
        if let tunnel {
            // CONNECT first (on the channel that connected: the initializer runs for every
            // address tried); TLS and HTTP start on the tunnel once the proxy says 2xx.
            let timeout = self.timeout
            let target = authority
            do {
                try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
                    let handshake = TunnelHandshake(
                        proxy: tunnel, target: target, done: channel.eventLoop.makePromise())
                    do {
                        try channel.pipeline.syncOperations.addHandler(handshake)
                    } catch {
                        handshake.done.fail(error)
                        return handshake.done.futureResult
                    }
                    let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
                        handshake.done.fail(Failure.timedOut(timeout))
                    }
                    handshake.start(channel)
                    // The handlers go in as the handshake leaves, on the event loop: no gap.
                    return handshake.done.futureResult.flatMapThrowing { try addHandlers(channel) }.always { _ in
                        timer.cancel()
                    }
                }.get()
            } catch {
                channel.close(promise: nil)
                throw error
            }
        }
        return Connection(channel: channel, collector: collector)
    }

    struct Connection: Sendable {
        let channel: any Channel
        let collector: ResponseCollector
    }
}
