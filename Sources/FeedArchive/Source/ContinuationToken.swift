import Foundation

/// An opaque, versioned resume point for a whole feed (every partition), printed as
/// `KIND:BASE64URL(JSON)`. The source owns what a partition's cursor means.
public struct ContinuationToken: Hashable, Sendable, CustomStringConvertible {
    /// Token format version; a newer one is refused rather than misread.
    public static let currentVersion = 1

    /// Source kind (`sqlite`, `postgres`, `cosmos`); a token of another kind is refused.
    public var kind: String
    /// Short fingerprint of the source identity, so a token from another job's source is refused.
    public var source: String?
    /// Partition id to the cursor after the last change consumed in it.
    public var cursors: [String: String]
    /// Source-specific facts that travel with the token (e.g. Cosmos feed mode).
    public var extra: [String: String]

    public init(kind: String, source: String?, cursors: [String: String], extra: [String: String] = [:]) {
        self.kind = kind
        self.source = source
        self.cursors = cursors
        self.extra = extra
    }

    private struct Payload: Codable {
        var v: Int
        var src: String?
        var c: [String: String]
        var x: [String: String]?
    }

    /// The printed form, stable for equal tokens (keys sorted).
    public var encoded: String {
        let payload = Payload(v: Self.currentVersion, src: source, c: cursors, x: extra.isEmpty ? nil : extra)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = (try? encoder.encode(payload)) ?? Data()
        return kind + ":" + base64URLEncode(json)
    }

    public var description: String { encoded }

    /// Parses `KIND:BASE64URL(JSON)`; `what` names where the text came from for the error.
    public static func decode(_ text: String, what: String = "token") throws -> ContinuationToken {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
            throw FeedArchiveError.data(
                path: nil, message: "\(what) \(abbreviate(text)) is not of the form KIND:BASE64URL(JSON)")
        }
        let kind = String(text[..<colon])
        guard let json = base64URLDecode(String(text[text.index(after: colon)...])) else {
            throw FeedArchiveError.data(
                path: nil, message: "\(what) \(abbreviate(text)): the part after '\(kind):' is not base64url")
        }
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: json)
        } catch {
            throw FeedArchiveError.data(
                path: nil, message: "\(what) \(abbreviate(text)): not a feedarchive token (\(error))")
        }
        guard payload.v == currentVersion else {
            throw FeedArchiveError.data(
                path: nil, message: "\(what) has version \(payload.v); this feedarchive reads version \(currentVersion)"
            )
        }
        return ContinuationToken(kind: kind, source: payload.src, cursors: payload.c, extra: payload.x ?? [:])
    }

    /// Refuses (65) a token that carries another source's fingerprint; `other` says what
    /// "another source" means for this kind (another server, another container, …).
    public func requireSource(_ fingerprint: String, other: String = "another source") throws {
        if let source, source != fingerprint {
            throw FeedArchiveError.data(
                path: nil, message: "the token belongs to \(other) (fingerprint \(source), this one is \(fingerprint))")
        }
    }

    /// This token with one partition's cursor moved.
    public func advancing(_ partition: String, to cursor: String) -> ContinuationToken {
        var copy = self
        copy.cursors[partition] = cursor
        return copy
    }
}

func abbreviate(_ text: String, limit: Int = 60) -> String {
    text.count <= limit ? "'\(text)'" : "'\(text.prefix(limit))…'"
}

public func base64URLEncode(_ data: Data) -> String {
    var text = data.base64EncodedString()
    text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    while text.hasSuffix("=") { text.removeLast() }
    return text
}

public func base64URLDecode(_ text: String) -> Data? {
    // Byte-level mapping to standard base64: tokens are decoded once per manifest line by verify.
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.utf8.count + 3)
    for byte in text.utf8 {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39: bytes.append(byte)
        case 0x2D: bytes.append(0x2B)  // - → +
        case 0x5F: bytes.append(0x2F)  // _ → /
        default: return nil
        }
    }
    while bytes.count % 4 != 0 { bytes.append(0x3D) }
    return Data(base64Encoded: Data(bytes))
}
