import FeedArchiveTesting
import Foundation
import Synchronization
import Testing

@testable import FeedArchiveCosmos

#if canImport(Glibc)
    import Glibc
#endif

/// The NIO HTTP/1.1 client under the Cosmos source, against a scripted loopback server: keep-alive
/// reuse, a kept connection the server closed meanwhile, `Connection: close`, chunked bodies, and
/// a server that never answers.
@Suite(.serialized) struct HTTPClientTests {
    /// A loopback TCP server on its own thread. Each accepted connection reads requests (up to
    /// the blank line) and answers each with `answer(n)`, the request's number over all
    /// connections; nil: close the connection instead; "RESET": reset it; "": never answer;
    /// "TUNNEL <port>": answer 200 and relay the connection to that loopback port (a proxy's
    /// `CONNECT`).
    final class ScriptedServer: @unchecked Sendable {
        let port: Int
        private let fd: Int32
        final class Seen: Sendable {
            let accepted = Atomic<Int>(0)
            let requests = Mutex<[String]>([])
            let count = Atomic<Int>(0)
        }
        let seen = Seen()
        var accepted: Int { seen.accepted.load(ordering: .relaxed) }
        var requests: [String] { seen.requests.withLock { $0 } }

        init(answer: @escaping @Sendable (Int) -> String?) throws {
            let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var yes: Int32 = 1
            setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0, listen(listener, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
            }
            port = Int(UInt16(bigEndian: address.sin_port))
            fd = listener
            let seen = self.seen
            Thread.detachNewThread {
                while true {
                    let client = accept(listener, nil, nil)
                    guard client >= 0 else { return }
                    seen.accepted.add(1, ordering: .relaxed)
                    Thread.detachNewThread {
                        var pending = ""
                        var chunk = [UInt8](repeating: 0, count: 4096)
                        while true {
                            let count = read(client, &chunk, chunk.count)
                            guard count > 0 else { break }
                            pending += String(decoding: chunk[0..<count], as: UTF8.self)
                            while let end = pending.range(of: "\r\n\r\n") {
                                seen.requests.withLock { $0.append(String(pending[..<end.lowerBound])) }
                                pending = String(pending[end.upperBound...])
                                let number = seen.count.add(1, ordering: .relaxed).newValue
                                guard let text = answer(number) else {
                                    close(client)
                                    return
                                }
                                if text == "RESET" {
                                    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                                    setsockopt(
                                        client, SOL_SOCKET, SO_LINGER, &linger,
                                        socklen_t(MemoryLayout<Glibc.linger>.size))
                                    close(client)
                                    return
                                }
                                if text.isEmpty { continue }  // silent
                                if text.hasPrefix("TUNNEL "), let port = UInt16(text.dropFirst(7)) {
                                    Self.relay(client, toPort: port, after: Array(pending.utf8))
                                    return
                                }
                                _ = text.utf8CString.withUnsafeBufferPointer {
                                    write(client, $0.baseAddress, $0.count - 1)
                                }
                            }
                        }
                        close(client)
                    }
                }
            }
        }

        deinit {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }

        /// Answers `CONNECT` with 200, then copies bytes both ways between `client` and the
        /// loopback `port` until either side closes.
        static func relay(_ client: Int32, toPort port: UInt16, after pending: [UInt8]) {
            let target = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(target, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard connected == 0 else {
                close(target)
                close(client)
                return
            }
            let established = Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8)
            _ = write(client, established, established.count)
            if !pending.isEmpty { _ = write(target, pending, pending.count) }
            @Sendable func pump(_ from: Int32, _ to: Int32) {
                var chunk = [UInt8](repeating: 0, count: 16384)
                while true {
                    let count = read(from, &chunk, chunk.count)
                    guard count > 0, write(to, chunk, count) == count else { break }
                }
                shutdown(to, Int32(SHUT_WR))
            }
            let back = Thread { pump(target, client) }
            back.start()
            pump(client, target)
            while !back.isFinished { usleep(10_000) }
            close(target)
            close(client)
        }
    }

    static func ok(_ body: String, extra: String = "") -> String {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nX-Ms-Continuation: \"42\"\r\n\(extra)\r\n\(body)"
    }

    @Test func keepsTheConnectionDecodesChunksAndLowerCasesHeaders() async throws {
        let server = try ScriptedServer { number in
            number == 2
                ? "HTTP/1.1 304 Not Modified\r\netag: \"7\"\r\n\r\n"
                : "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n"
        }
        let client = HTTPClient(endpoint: URL(string: "http://127.0.0.1:\(server.port)/base/")!, timeout: 5)
        let first = try await client.get(client.basePath + "dbs/x", headers: [("x-ms-version", "2020-07-15")])
        #expect(first.status == 200)
        #expect(String(buffer: first.body) == "{\"a\": 1}")
        let second = try await client.get(client.basePath + "dbs/y", headers: [])
        #expect(second.status == 304 && second.headers["etag"] == "\"7\"" && second.body.readableBytes == 0)
        #expect(server.accepted == 1)
        let requests = server.requests
        #expect(requests.first?.hasPrefix("GET /base/dbs/x HTTP/1.1\r\n") == true)
        #expect(requests.first?.contains("Host: 127.0.0.1:\(server.port)") == true)
        #expect(requests.first?.contains("x-ms-version: 2020-07-15") == true)
    }

    @Test func aKeptConnectionTheServerClosedIsReplacedOnce() async throws {
        // The second request arrives on the kept connection, which the server then closes
        // unanswered (as a server that timed the idle connection out does).
        let server = try ScriptedServer { number in number == 2 ? nil : ScriptedServerAnswers.ok }
        let client = HTTPClient(endpoint: URL(string: "http://127.0.0.1:\(server.port)/")!, timeout: 5)
        #expect(try await client.get("/a", headers: []).status == 200)
        let again = try await client.get("/b", headers: [])
        #expect(again.status == 200)
        #expect(server.accepted == 2)
    }

    @Test func aKeptConnectionThatIsResetIsReplacedOnce() async throws {
        let server = try ScriptedServer { number in number == 2 ? "RESET" : ScriptedServerAnswers.ok }
        let client = HTTPClient(endpoint: URL(string: "http://127.0.0.1:\(server.port)/")!, timeout: 5)
        #expect(try await client.get("/a", headers: []).status == 200)
        #expect(try await client.get("/b", headers: []).status == 200)
        #expect(server.accepted == 2)
    }

    @Test func connectionsInUseAtCloseAreNotKept() async throws {
        let server = try ScriptedServer { _ in ScriptedServerAnswers.ok }
        let client = HTTPClient(endpoint: URL(string: "http://127.0.0.1:\(server.port)/")!, timeout: 5)
        #expect(try await client.get("/a", headers: []).status == 200)
        client.closeIdle()
        #expect(try await client.get("/b", headers: []).status == 200)  // a read ahead still running
        #expect(try await client.get("/c", headers: []).status == 200)
        #expect(server.accepted == 3)
    }

    @Test func connectionCloseIsNotReused() async throws {
        let server = try ScriptedServer { _ in Self.ok("{}", extra: "Connection: close\r\n") }
        let client = HTTPClient(endpoint: URL(string: "http://127.0.0.1:\(server.port)/")!, timeout: 5)
        for _ in 0..<3 { #expect(try await client.get("/", headers: []).headers["x-ms-continuation"] == "\"42\"") }
        #expect(server.accepted == 3)
    }

    @Test func aServerThatNeverAnswersTimesOut() async throws {
        let server = try ScriptedServer { _ in "" }
        let client = HTTPClient(endpoint: URL(string: "http://127.0.0.1:\(server.port)/")!, timeout: 1)
        let started = Date()
        await #expect(throws: HTTPClient.Failure.self) { try await client.get("/", headers: []) }
        let waited = Date().timeIntervalSince(started)
        #expect(waited >= 0.9 && waited < 4, "waited \(waited) s")
        do {
            _ = try await client.get("/", headers: [])
        } catch {
            #expect("\(error)" == "timed out after 1 s")
        }
    }
}

/// The client through an HTTP proxy: settings read from the environment as curl reads them,
/// plain http as an absolute URL, https through a `CONNECT` tunnel to a real TLS server
/// (Python's, with a certificate `openssl` makes for the test), and a proxy that refuses.
@Suite(.serialized) struct HTTPProxyTests {
    typealias ScriptedServer = HTTPClientTests.ScriptedServer

    @Test func proxySettingsComeFromTheEnvironmentAsCurlReadsThem() throws {
        let https = URL(string: "https://acct.documents.azure.com:443/")!
        let http = URL(string: "http://emulator.internal:8081/")!
        #expect(try HTTPProxy.resolve(for: https, environment: [:]) == nil)
        let proxy = try HTTPProxy.resolve(
            for: https, environment: ["HTTPS_PROXY": "http://us%40r:p%3Ass@proxy.corp:3128"])
        #expect(proxy?.host == "proxy.corp" && proxy?.port == 3128 && proxy?.variable == "HTTPS_PROXY")
        #expect(proxy?.authorization == "Basic " + Data("us@r:p:ss".utf8).base64EncodedString())
        #expect(try HTTPProxy.resolve(for: https, environment: ["https_proxy": "proxy.corp"])?.port == 1080)
        // http_proxy only in lower case (CGI puts a request's Proxy header in HTTP_PROXY).
        #expect(try HTTPProxy.resolve(for: http, environment: ["HTTP_PROXY": "http://proxy.corp:3128"]) == nil)
        #expect(
            try HTTPProxy.resolve(for: http, environment: ["http_proxy": "http://proxy.corp:3128"])?.variable
                == "http_proxy")
        #expect(
            try HTTPProxy.resolve(for: http, environment: ["ALL_PROXY": "http://proxy.corp:3128"])?.variable
                == "ALL_PROXY")
        for list in [
            "*", "azure.com", ".documents.azure.com", "other.org, acct.documents.azure.com:443", "other.org azure.com.",
        ] {
            #expect(
                try HTTPProxy.resolve(for: https, environment: ["https_proxy": "http://p:1", "no_proxy": list]) == nil,
                "\(list)")
        }
        for list in ["zure.com,azure.co", "other.org,*"] {
            #expect(
                try HTTPProxy.resolve(for: https, environment: ["https_proxy": "http://p:1", "NO_PROXY": list]) != nil,
                "\(list)")
        }
        #expect(
            try HTTPProxy.resolve(
                for: https, environment: ["https_proxy": "http://p:1", "no_proxy": "", "NO_PROXY": "azure.com"]) == nil)
        // An address matches only itself, not as a suffix.
        let address = URL(string: "http://10.0.0.5:8081/")!
        #expect(
            try HTTPProxy.resolve(for: address, environment: ["http_proxy": "http://p:1", "no_proxy": "0.5"]) != nil)
        #expect(
            try HTTPProxy.resolve(for: address, environment: ["http_proxy": "http://p:1", "no_proxy": "10.0.0.5"])
                == nil)
        #expect(throws: HTTPProxy.Invalid.self) {
            try HTTPProxy.resolve(for: https, environment: ["https_proxy": "http://:8080"])
        }
        // A password never shows in a message, nor in the proxy's description.
        do {
            _ = try HTTPProxy.resolve(for: https, environment: ["https_proxy": "https://alice:s3cret@p:1"])
            Issue.record("an https:// proxy was accepted")
        } catch {
            #expect(
                "\(error)"
                    == "https_proxy: 'https://***@p:1': only http:// proxies are supported (an https endpoint goes through a CONNECT tunnel, so its traffic stays encrypted)"
            )
        }
        #expect("\(proxy!)" == "proxy.corp:3128")
    }

    @Test func plainHTTPAsksTheProxyForTheAbsoluteURL() async throws {
        let proxy = try ScriptedServer { _ in ScriptedServerAnswers.ok }
        let client = HTTPClient(
            endpoint: URL(string: "http://emulator.invalid:8081/base/")!, timeout: 5,
            proxy: HTTPProxy(host: "127.0.0.1", port: proxy.port, authorization: "Basic dTpw", variable: "http_proxy"))
        #expect(try await client.get(client.basePath + "dbs/x", headers: []).status == 200)
        #expect(try await client.get(client.basePath + "dbs/y", headers: []).status == 200)
        let requests = proxy.requests
        #expect(
            requests.first?.hasPrefix("GET http://emulator.invalid:8081/base/dbs/x HTTP/1.1\r\n") == true, "\(requests)"
        )
        #expect(requests.first?.contains("Host: emulator.invalid:8081") == true)
        #expect(requests.first?.contains("Proxy-Authorization: Basic dTpw") == true)
        #expect(proxy.accepted == 1)  // kept alive, as without a proxy
    }

    @Test func httpsGoesThroughAConnectTunnel() async throws {
        let dir = TempDirectory("feedarchive-proxy")
        let key = dir.path + "/key.pem", certificate = dir.path + "/cert.pem"
        let made = try run(
            "openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate, "-days", "1",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            ])
        #expect(made == 0)
        let script = dir.write(
            "server.py",
            """
            import http.server, ssl, sys
            class Handler(http.server.BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                def do_GET(self):
                    body = ('{"path":"%s"}' % self.path).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(sys.argv[1], sys.argv[2])
            server.socket = context.wrap_socket(server.socket, server_side=True)
            print(server.server_address[1], flush=True)
            server.serve_forever()
            """)
        let tls = Process()
        tls.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tls.arguments = ["python3", script, certificate, key]
        let output = Pipe()
        tls.standardOutput = output
        tls.standardError = FileHandle.nullDevice
        try tls.run()
        defer {
            kill(tls.processIdentifier, SIGKILL)  // SIGTERM may be blocked in the test's threads, and so in the child
            tls.waitUntilExit()
        }
        var line: [UInt8] = []
        while let byte = try output.fileHandleForReading.read(upToCount: 1)?.first, byte != 0x0A { line.append(byte) }
        let tlsPort = try #require(UInt16(String(decoding: line, as: UTF8.self)))

        let proxy = try ScriptedServer { _ in "TUNNEL \(tlsPort)" }
        let client = HTTPClient(
            endpoint: URL(string: "https://localhost:\(tlsPort)/")!, timeout: 10,
            proxy: HTTPProxy(host: "127.0.0.1", port: proxy.port, authorization: "Basic dTpw", variable: "https_proxy"),
            certificateBundle: certificate)
        let first = try await client.get("/dbs/x", headers: [])
        #expect(first.status == 200 && String(buffer: first.body) == #"{"path":"/dbs/x"}"#)
        #expect(try await client.get("/dbs/y", headers: []).status == 200)
        let requests = proxy.requests
        #expect(requests.count == 1, "\(requests)")  // one CONNECT; the requests went inside TLS
        #expect(requests.first?.hasPrefix("CONNECT localhost:\(tlsPort) HTTP/1.1\r\n") == true, "\(requests)")
        #expect(requests.first?.contains("Proxy-Authorization: Basic dTpw") == true)
        #expect(proxy.accepted == 1)

        // Without the test's certificate the server is not trusted: the tunnel is not a way around TLS.
        let untrusting = HTTPClient(
            endpoint: URL(string: "https://localhost:\(tlsPort)/")!, timeout: 10,
            proxy: HTTPProxy(host: "127.0.0.1", port: proxy.port, authorization: nil, variable: "https_proxy"),
            certificateBundle: nil)
        do {
            _ = try await untrusting.get("/dbs/x", headers: [])
            Issue.record("a server with an untrusted certificate was believed")
        } catch {
            #expect("\(error)".contains("CERTIFICATE_VERIFY_FAILED"), "\(error)")
        }
    }

    @Test func aProxyThatRefusesIsNamed() async throws {
        let proxy = try ScriptedServer { _ in "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
        }
        let client = HTTPClient(
            endpoint: URL(string: "https://acct.documents.azure.com/")!, timeout: 5,
            proxy: HTTPProxy(host: "127.0.0.1", port: proxy.port, authorization: nil, variable: "HTTPS_PROXY"))
        do {
            _ = try await client.get("/dbs", headers: [])
            Issue.record("the request went through a proxy that refused")
        } catch {
            #expect(
                "\(error)"
                    == "the proxy 127.0.0.1:\(proxy.port) (HTTPS_PROXY) refused CONNECT acct.documents.azure.com:443: HTTP/1.1 407 Proxy Authentication Required"
            )
        }
    }

    /// Runs a command to its end; its exit status.
    func run(_ command: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [command] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

enum ScriptedServerAnswers {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
}
