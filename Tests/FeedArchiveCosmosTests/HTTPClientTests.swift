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
    /// connections; nil: close the connection instead; "RESET": reset it; "": never answer.
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
            let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard bound == 0, listen(listener, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
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
                                    setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                                    close(client)
                                    return
                                }
                                if text.isEmpty { continue }  // silent
                                _ = text.utf8CString.withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count - 1) }
                            }
                        }
                        close(client)
                    }
                }
            }
        }

        deinit { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
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

enum ScriptedServerAnswers {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
}
