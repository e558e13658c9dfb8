import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The job's exclusive lock: a non-blocking flock on `_feedarchive/lock`, which also holds the
/// holder's pid and start time for the message a second run prints.
public final class JobLock {
    private var fd: Int32
    public let path: String

    /// Takes the lock or throws `.locked` (exit 75) naming who holds it.
    public init(path: String, mode: mode_t) throws {
        self.path = path
        // Never through a symbolic link: the holder's line would truncate the file it points to.
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode)
        if fd < 0 && errno == ELOOP {
            throw FeedArchiveError.data(
                path: path, message: "the lock file is a symbolic link; feedarchive does not follow it",
                hint: "nothing was changed; remove the link, the next run creates a plain lock file")
        }
        if fd < 0 { throw FeedArchiveError.io(operation: "open lock file", path: path, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            let holder = (try? PosixFileSystem().read(path)).flatMap { String(decoding: $0, as: UTF8.self) } ?? ""
            Glibc.close(fd)
            fd = -1
            if code == EWOULDBLOCK {
                let who = holder.trimmingCharacters(in: .whitespacesAndNewlines)
                throw FeedArchiveError.locked(path: path, holder: who.isEmpty ? "unknown holder" : who)
            }
            throw FeedArchiveError.io(operation: "flock", path: path, errno: code)
        }
        let host = ProcessInfo.processInfo.hostName
        let started = formatRFC3339(microseconds: Int64(Date().timeIntervalSince1970) * 1_000_000)
        let text = "pid \(getpid()) on \(host), started \(started)\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    deinit { release() }

    /// Gives the lock up (also done when the process dies: the kernel drops flocks).
    ///
    /// Unlocks before closing: a flock belongs to the open file description, and a child that
    /// another thread is spawning holds a copy of it until its exec closes it (O_CLOEXEC). Closing
    /// alone would leave the job locked for that moment, and the next run in this process would
    /// be refused with "locked by another run (unknown holder)".
    public func release() {
        guard fd >= 0 else { return }
        _ = ftruncate(fd, 0)
        _ = flock(fd, LOCK_UN)
        Glibc.close(fd)
        fd = -1
    }
}
