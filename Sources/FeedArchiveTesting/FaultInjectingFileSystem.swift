import FeedArchive
import Foundation
import Synchronization

/// The real file system with chosen operations made to fail, as a full disk, a failing fsync
/// or a refused rename would. Used to prove that no failure moves the checkpoint past
/// durable data and that the next run, once the fault is gone, completes.
public final class FaultInjectingFileSystem: FileSystem, Sendable {
    /// The operations a fault can target.
    public enum Operation: String, Sendable {
        case createDirectory, create, openForAppend, write, sync, close, rename, syncDirectory, remove, truncate
    }

    /// Fail the `skip + 1`-th matching operation (and, if `sticky`, every later one) with `errno`.
    public struct Fault: Sendable {
        public var operation: Operation
        public var pathContains: String
        public var errno: Int32
        public var skip: Int
        public var sticky: Bool

        public init(
            _ operation: Operation, pathContains: String = "", errno: Int32 = ENOSPC, skip: Int = 0,
            sticky: Bool = false
        ) {
            self.operation = operation
            self.pathContains = pathContains
            self.errno = errno
            self.skip = skip
            self.sticky = sticky
        }
    }

    private let real = PosixFileSystem()
    private let faults: Mutex<[Fault]>
    /// Called before every operation with its path: lets a test change the world at an exact
    /// step (delete a directory under a running job, fill the disk).
    public let beforeOperation: (@Sendable (Operation, String) -> Void)?
    private let fired: Mutex<[String]> = Mutex([])

    public init(_ faults: [Fault] = [], beforeOperation: (@Sendable (Operation, String) -> Void)? = nil) {
        self.faults = Mutex(faults)
        self.beforeOperation = beforeOperation
    }

    /// Removes every fault (the disk was cleaned up).
    public func heal() { faults.withLock { $0.removeAll() } }

    /// Descriptions of the faults that fired, in order.
    public var firedFaults: [String] { fired.withLock { $0 } }

    func check(_ operation: Operation, _ path: String) throws {
        beforeOperation?(operation, path)
        let failure: Int32? = faults.withLock { faults in
            for index in faults.indices
            where faults[index].operation == operation
                && (faults[index].pathContains.isEmpty || path.contains(faults[index].pathContains))
            {
                if faults[index].skip > 0 {
                    faults[index].skip -= 1
                    continue
                }
                let code = faults[index].errno
                if !faults[index].sticky { faults.remove(at: index) }
                return code
            }
            return nil
        }
        if let failure {
            fired.withLock { $0.append("\(operation.rawValue) \(path)") }
            throw FeedArchiveError.io(operation: "\(operation.rawValue) (injected)", path: path, errno: failure)
        }
    }

    public func createDirectories(_ path: String, mode: mode_t) throws -> [String] {
        if !real.isDirectory(path) { try check(.createDirectory, path) }
        return try real.createDirectories(path, mode: mode)
    }

    public func create(_ path: String, mode: mode_t) throws -> any WritableFile {
        try check(.create, path)
        return FaultyFile(try real.create(path, mode: mode), fs: self)
    }

    public func openForAppend(_ path: String, mode: mode_t) throws -> any WritableFile {
        try check(.openForAppend, path)
        return FaultyFile(try real.openForAppend(path, mode: mode), fs: self)
    }

    public func rename(_ from: String, to: String) throws {
        try check(.rename, from)
        try real.rename(from, to: to)
    }

    public func syncDirectory(_ path: String) throws {
        try check(.syncDirectory, path)
        try real.syncDirectory(path)
    }

    public func remove(_ path: String) throws {
        try check(.remove, path)
        try real.remove(path)
    }

    public func truncate(_ path: String, to length: Int64) throws {
        try check(.truncate, path)
        try real.truncate(path, to: length)
    }

    public func read(_ path: String) throws -> [UInt8]? { try real.read(path) }
    public func list(_ path: String) throws -> [String]? { try real.list(path) }
    public func isDirectory(_ path: String) -> Bool { real.isDirectory(path) }
    public func size(_ path: String) throws -> Int64? { try real.size(path) }
}

/// A file whose writes, fsync and close go through the fault list. A failing write writes
/// half its bytes first, as a disk that fills up mid-write does.
final class FaultyFile: WritableFile {
    let inner: any WritableFile
    let fs: FaultInjectingFileSystem
    var path: String { inner.path }

    init(_ inner: any WritableFile, fs: FaultInjectingFileSystem) {
        self.inner = inner
        self.fs = fs
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            try fs.check(.write, path)
        } catch {
            try inner.write(UnsafeRawBufferPointer(rebasing: bytes[0..<(bytes.count / 2)]))
            throw error
        }
        try inner.write(bytes)
    }

    func sync() throws {
        try fs.check(.sync, path)
        try inner.sync()
    }

    func close() throws {
        try fs.check(.close, path)
        try inner.close()
    }

    func startWriteback() { inner.startWriteback() }
}
