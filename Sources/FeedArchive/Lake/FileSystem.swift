import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A file open for writing; every failure is a `FeedArchiveError.io` naming the path.
public protocol WritableFile: AnyObject {
    var path: String { get }
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// fsync: after it returns the bytes are durable. A failure means the data is in doubt.
    func sync() throws
    func close() throws
    /// Starts writing the file's dirty pages back without waiting (a hint: `sync` still makes
    /// them durable). Block allocation then happens now, so the first of several fsyncs commits
    /// the journal for all of them.
    func startWriteback()
}

extension WritableFile {
    public func startWriteback() {}
}

/// The file operations the archive is built from. The real one is `PosixFileSystem`;
/// `FeedArchiveTesting.FaultInjectingFileSystem` fails chosen operations to prove that a
/// failure never moves the checkpoint past durable data.
public protocol FileSystem: Sendable {
    /// Creates `path` and missing parents; returns the directories it created, outermost first.
    func createDirectories(_ path: String, mode: mode_t) throws -> [String]
    /// Creates (or truncates) a file for writing.
    func create(_ path: String, mode: mode_t) throws -> any WritableFile
    /// Opens an existing file to append to it (created if missing).
    func openForAppend(_ path: String, mode: mode_t) throws -> any WritableFile
    func rename(_ from: String, to: String) throws
    /// fsync of a directory, so a rename or create inside it is durable.
    func syncDirectory(_ path: String) throws
    func remove(_ path: String) throws
    func truncate(_ path: String, to length: Int64) throws
    /// The whole file, or nil when it does not exist.
    func read(_ path: String) throws -> [UInt8]?
    /// Entry names of a directory (no `.`/`..`), or nil when it does not exist.
    func list(_ path: String) throws -> [String]?
    func isDirectory(_ path: String) -> Bool
    /// Size in bytes, or nil when the file does not exist.
    func size(_ path: String) throws -> Int64?
}

/// What a directory entry is, without following a symbolic link.
public enum EntryKind: Sendable {
    case file, directory, symbolicLink, other
}

extension FileSystem {
    /// What `path` itself is (`lstat`: a symbolic link is reported, not followed); nil when absent.
    public func entryKind(_ path: String) -> EntryKind? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .directory
        case S_IFLNK: return .symbolicLink
        default: return .other
        }
    }

    /// `replaceAtomically` with `value` as JSON (sorted keys, a newline at the end): the
    /// archive's small state files (job.json, checkpoint.json, verified.json).
    public func replaceAtomically(_ path: String, json value: some Encodable, pretty: Bool = false, mode: mode_t)
        throws
    {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        try replaceAtomically(path, with: Array(try encoder.encode(value)) + [0x0A], mode: mode)
    }

    /// The durable replace: temp file, write, fsync, close, rename, fsync the directory.
    /// Readers see the old or the new contents, never a mix.
    public func replaceAtomically(_ path: String, with bytes: [UInt8], mode: mode_t) throws {
        let temp = path + ".tmp"
        let file = try create(temp, mode: mode)
        do {
            try bytes.withUnsafeBytes { try file.write($0) }
            try file.sync()
            try file.close()
        } catch {
            try? file.close()
            try? remove(temp)
            throw error
        }
        try rename(temp, to: path)
        try syncDirectory(parentDirectory(of: path))
    }
}

/// The directory part of a path (`.` for a bare name).
public func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// The last path component.
public func lastComponent(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return path }
    return String(path[path.index(after: slash)...])
}

/// The real file system, over POSIX calls, retrying EINTR.
public struct PosixFileSystem: FileSystem {
    public init() {}

    static func fail(_ operation: String, _ path: String) -> FeedArchiveError {
        .io(operation: operation, path: path, errno: errno)
    }

    public func createDirectories(_ path: String, mode: mode_t) throws -> [String] {
        if isDirectory(path) { return [] }
        var created: [String] = []
        let parent = parentDirectory(of: path)
        if parent != path && parent != "." && parent != "/" { created += try createDirectories(parent, mode: mode) }
        if mkdir(path, mode) != 0 {
            if errno == EEXIST && isDirectory(path) { return created }
            throw Self.fail("create directory", path)
        }
        _ = chmod(path, mode)  // mkdir honours the umask; the job's mode is what was asked for
        created.append(path)
        return created
    }

    public func create(_ path: String, mode: mode_t) throws -> any WritableFile {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        if fd < 0 { throw Self.fail("create", path) }
        _ = fchmod(fd, mode)
        return PosixFile(fd: fd, path: path, startsWriteback: true)
    }

    public func openForAppend(_ path: String, mode: mode_t) throws -> any WritableFile {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, mode)
        if fd < 0 { throw Self.fail("open for append", path) }
        return PosixFile(fd: fd, path: path)
    }

    public func rename(_ from: String, to: String) throws {
        if Glibc.rename(from, to) != 0 { throw Self.fail("rename to \(to)", from) }
    }

    public func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw Self.fail("open directory", path) }
        defer { Glibc.close(fd) }
        if fsync(fd) != 0 { throw Self.fail("fsync directory", path) }
    }

    public func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw Self.fail("remove", path) }
    }

    public func truncate(_ path: String, to length: Int64) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { throw Self.fail("open", path) }
        defer { Glibc.close(fd) }
        if ftruncate(fd, off_t(length)) != 0 { throw Self.fail("truncate", path) }
        if fsync(fd) != 0 { throw Self.fail("fsync", path) }
    }

    public func read(_ path: String) throws -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw Self.fail("open", path)
        }
        defer { Glibc.close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw Self.fail("read", path)
            }
            if count == 0 { return result }
            result.append(contentsOf: chunk[0..<count])
        }
    }

    public func list(_ path: String) throws -> [String]? {
        guard let dir = opendir(path) else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw Self.fail("list", path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        // The name is read in place, up to its NUL. Copying `entry.pointee` (or its 256-byte
        // d_name) reads sizeof(dirent) bytes, but glibc packs entries by their real length in
        // its getdents buffer: a short last entry then read past the buffer's end, and a run
        // crashed with SIGSEGV in recovery when that end was the end of a mapping.
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        while let entry = readdir(dir) {
            let name = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    public func size(_ path: String) throws -> Int64? {
        var info = stat()
        if stat(path, &info) != 0 {
            if errno == ENOENT { return nil }
            throw Self.fail("stat", path)
        }
        return Int64(info.st_size)
    }
}

/// A POSIX file descriptor open for writing.
final class PosixFile: WritableFile {
    let path: String
    private var fd: Int32

    /// Files written from their start (blobs, temp files) start writeback as they grow; files
    /// opened for append (the manifest) do not: their offsets are not counted from 0.
    init(fd: Int32, path: String, startsWriteback: Bool = false) {
        self.fd = fd
        self.path = path
        self.startsWriteback = startsWriteback
    }
    private let startsWriteback: Bool

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Bytes written, and how far writeback was started (see `write`).
    private var size: Int64 = 0
    private var writebackStarted: Int64 = 0
    static let writebackChunk: Int64 = 1 << 20

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw PosixFileSystem.fail("write", path)
            }
            offset += written
        }
        size += Int64(bytes.count)
        // Start writeback of each full MiB now (asynchronous on Linux, as PostgreSQL's
        // pg_flush_data does where sync_file_range is missing), so the fsync at the end of a
        // blob waits for its last MiB instead of all of it, and the pipeline barely stalls.
        // Whole pages only: a partial last page would be written back now and again later.
        let end = size & ~4095
        if startsWriteback && end - writebackStarted >= Self.writebackChunk {
            _ = posix_fadvise(fd, off_t(writebackStarted), off_t(end - writebackStarted), POSIX_FADV_DONTNEED)
            writebackStarted = end
        }
    }

    func sync() throws {
        if fsync(fd) != 0 { throw PosixFileSystem.fail("fsync", path) }
    }

    func startWriteback() {
        guard fd >= 0, size > writebackStarted else { return }
        // The whole rest, partial last page included: the file is complete.
        _ = posix_fadvise(fd, off_t(writebackStarted), 0, POSIX_FADV_DONTNEED)
        writebackStarted = size
    }

    func close() throws {
        guard fd >= 0 else { return }
        let result = Glibc.close(fd)
        fd = -1
        if result != 0 { throw PosixFileSystem.fail("close", path) }
    }
}
