import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct JobLockTests {
    @Test func aSecondLockInTheSameProcessIsRefusedNamingTheHolder() throws {
        let dir = TempDirectory()
        let path = dir.path + "/lock"
        let first = try JobLock(path: path, mode: 0o640)
        #expect {
            _ = try JobLock(path: path, mode: 0o640)
        } throws: { error in
            guard case FeedArchiveError.locked(let lockPath, let holder) = error else { return false }
            return lockPath == path && holder.contains("pid \(getpid())")
        }
        first.release()
        #expect(throws: Never.self) { try JobLock(path: path, mode: 0o640).release() }
    }

    /// Found by CI (VerifyTests, 1 run in many): a test thread spawned a process while another
    /// released the job lock. Between fork and exec the child holds a copy of the lock's file
    /// description, so closing the descriptor alone left the job locked and the next backfill
    /// was refused with "unknown holder". A duplicate descriptor stands in for that child here.
    @Test func releaseFreesTheLockWhileACopyOfTheDescriptorIsStillOpen() throws {
        let dir = TempDirectory()
        let path = dir.path + "/lock"
        let lock = try JobLock(path: path, mode: 0o640)
        let copy = try #require(duplicateOfOpenFile(at: path))
        defer { close(copy) }
        lock.release()
        #expect(throws: Never.self) { try JobLock(path: path, mode: 0o640).release() }
    }

    /// A new descriptor for the same open file description as this process's descriptor of
    /// `path` (found through /proc/self/fd), as a child between fork and exec would hold.
    private func duplicateOfOpenFile(at path: String) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
        for entry in entries {
            guard let fd = Int32(entry),
                let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)"),
                target == path
            else { continue }
            return dup(fd)
        }
        return nil
    }
}
