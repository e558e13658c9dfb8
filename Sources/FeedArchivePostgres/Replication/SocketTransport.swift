import FeedArchive
import Foundation
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A Unix-domain socket read by the reader itself: a non-blocking `recv` of whatever the
/// kernel holds, and `poll` when it holds nothing; between messages, `drain` takes in what
/// arrived meanwhile.
///
/// Why not the NIO event loop here: the walsender sends each ~450-byte message on its own,
/// and an event-loop thread woken for every few of them (thousands of times a second) lands
/// on the walsender's core and preempts it; with two cores the walsender then runs at
/// 75–85%, and it is the bottleneck. A reader that reads on its own thread sleeps only when it
/// has drained the socket, and wakes on its own core, as pg_recvlogical does. The price:
/// `receive` blocks its thread in `poll` while the server is silent, in slices of `slice`
/// seconds, like the other short blocking waits.
final class SocketTransport: ReplicationTransport {
    private let fd: Int32
    private let watch: StreamWatch
    /// The error that ended the connection (set by `fail`, or by a failed read).
    private let ended = Mutex<(any Error)?>(nil)
    /// Sends hold it, so that status updates from the watchdog never interleave with others.
    private let sending = Mutex<Void>(())
    /// Bytes `drain` took in, for the next `receive` (the reader's alone).
    private let spill = Mutex(ByteBuffer())
    static let spillLimit = 8 << 20
    static let slice: Int32 = 200  // milliseconds
    static let readSize = 256 << 10
    /// After a read that found nothing, the reader sleeps this long (µs) before it waits in
    /// `poll`: the walsender then sends some 70 messages meanwhile (its socket holds about 200),
    /// read in one call, rather than waking the reader for each. Measured: sleeping 100–500 µs
    /// halves the reader's system time; 0 adds ~0.05 s to the 200,000-row benchmark.
    static let pause: UInt32 = 250
    /// `drain` is called every this many messages (about 100 µs of decoding).
    static let drainEvery = 32

    private init(fd: Int32, watch: StreamWatch) {
        self.fd = fd
        self.watch = watch
    }

    deinit { close(fd) }

    /// Connects to the server's socket file (`…/.s.PGSQL.5432`), within `timeout` seconds (a
    /// server whose listen queue is full refuses at once with EAGAIN: tried again until then).
    static func connect(path: String, timeout: Double, watch: StreamWatch) throws -> SocketTransport {
        let fd = socket(
            AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw ReplicationConnection.Failure.io("socket", errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw ReplicationConnection.Failure.unsupported(
                "the socket path \(path) is longer than a Unix socket address allows")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let deadline = StreamWatch.uptime() + UInt64(timeout * 1e9)
        while true {
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if connected == 0 { break }
            let code = errno
            if (code == EAGAIN || code == EINTR) && StreamWatch.uptime() < deadline {
                usleep(10_000)
                continue
            }
            close(fd)
            throw code == EAGAIN
                ? ReplicationConnection.Failure.timedOut(timeout) : ReplicationConnection.Failure.connect(path, code)
        }
        return SocketTransport(fd: fd, watch: watch)
    }

    func send(_ bytes: ByteBuffer) {
        sending.withLock { _ in
            bytes.withUnsafeReadableBytes { data in
                var offset = 0
                while offset < data.count, ended.withLock({ $0 == nil }) {
                    let sent = Glibc.send(fd, data.baseAddress! + offset, data.count - offset, Int32(MSG_NOSIGNAL))
                    if sent > 0 {
                        offset += sent
                    } else if sent < 0 && (errno == EAGAIN || errno == EINTR) {
                        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                        _ = poll(&entry, 1, Self.slice)
                    } else {
                        return  // the read side reports the broken connection
                    }
                }
            }
        }
    }

    func receive(into buffer: inout ByteBuffer, need: Int) async throws {
        let handed = spill.withLock { spill -> Bool in
            guard spill.readableBytes > 0 else { return false }
            if buffer.readableBytes == 0 {
                swap(&buffer, &spill)
                spill.clear()
            } else {
                buffer.writeBuffer(&spill)
                spill.clear()
            }
            return true
        }
        if handed { return }
        if buffer.readableBytes == 0 {
            buffer.clear()
        } else if buffer.readerIndex > 0 {
            buffer.discardReadBytes()  // a part of one message: a few bytes, as a rule
        }
        buffer.reserveCapacity(minimumWritableBytes: max(need - buffer.readableBytes, Self.readSize))
        var waiting = false
        var slept = false
        defer { if waiting { watch.state.withLock { $0.waitingSince = nil } } }
        while true {
            if let error = ended.withLock({ $0 }) { throw error }
            var code: Int32 = 0
            let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { space in
                let read = recv(fd, space.baseAddress, space.count, Int32(MSG_DONTWAIT))
                if read < 0 { code = errno }
                return max(read, 0)
            }
            if count > 0 { return }
            if code == 0 { throw end(ReplicationConnection.Failure.closed) }
            guard code == EAGAIN || code == EWOULDBLOCK || code == EINTR else {
                throw end(ReplicationConnection.Failure.io("recv", code))
            }
            if !slept && watch.state.withLock({ $0.streaming }) {
                slept = true
                usleep(Self.pause)
                continue
            }
            if !waiting {
                waiting = true
                watch.state.withLock { $0.waitingSince = StreamWatch.uptime() }
            }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&entry, 1, Self.slice)
        }
    }

    /// Reads what the socket holds into `spill` (up to `spillLimit`), without waiting: called
    /// between messages, so that the walsender's send buffer, which holds well under a
    /// millisecond of its output, never fills while the reader decodes what it has. (A full
    /// buffer puts the walsender to sleep until three quarters of it are read.)
    func drain() {
        spill.withLock { spill in
            while spill.readableBytes < Self.spillLimit {
                if spill.readableBytes == 0 { spill.clear() }
                var full = false
                let count = spill.writeWithUnsafeMutableBytes(minimumWritableBytes: 64 << 10) { space in
                    let read = recv(fd, space.baseAddress, space.count, Int32(MSG_DONTWAIT))
                    full = read == space.count
                    return max(read, 0)
                }
                if count == 0 || !full { return }  // nothing more (an end or error shows in `receive`)
            }
        }
    }

    func fail(_ error: any Error) {
        _ = end(error)
        shutdown(fd, Int32(SHUT_RDWR))  // wakes a reader in poll; the descriptor stays ours until deinit
    }

    private func end(_ error: any Error) -> any Error {
        ended.withLock { ended in
            if ended == nil { ended = error }
            return ended!
        }
    }
}
