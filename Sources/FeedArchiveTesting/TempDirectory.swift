import Foundation

/// A fresh folder under the system temp directory, removed when the value goes away.
public final class TempDirectory {
    public let path: String

    public init(_ name: String = "feedarchive") {
        let base = FileManager.default.temporaryDirectory.path
        path = base + "/" + name + "-" + UUID().uuidString.prefix(8).lowercased()
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes a file inside the folder and returns its path.
    @discardableResult
    public func write(_ name: String, _ text: String) -> String {
        let file = path + "/" + name
        _ = FileManager.default.createFile(atPath: file, contents: Data(text.utf8))
        return file
    }
}
