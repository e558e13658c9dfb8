import Crypto
import Foundation

/// The `authorization` header of a request signed with the account's master key: HMAC-SHA256
/// over `verb\nresourceType\nresourceLink\ndate\n\n` (all lower-cased but the link), base64,
/// then URL-encoded `type=master&ver=1.0&sig=…`. The key never leaves this type.
public struct MasterKeyAuthorization: Sendable {
    /// The key bytes; `SymmetricKey` is made per request because it is not Sendable.
    private let key: [UInt8]

    /// `base64Key` is the account key as the portal shows it; nil when it is not base64.
    public init?(base64Key: String) {
        guard let bytes = Data(base64Encoded: base64Key.trimmingCharacters(in: .whitespacesAndNewlines)), !bytes.isEmpty
        else { return nil }
        key = Array(bytes)
    }

    /// The header value for one request. `resourceLink` is name-based and kept as is.
    public func header(verb: String, resourceType: String, resourceLink: String, date: String) -> String {
        let text =
            verb.lowercased() + "\n" + resourceType.lowercased() + "\n" + resourceLink + "\n" + date.lowercased()
            + "\n\n"
        let signature = Data(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: SymmetricKey(data: key)))
            .base64EncodedString()
        return Self.formEncode("type=master&ver=1.0&sig=" + signature)
    }

    /// Percent-encodes everything but unreserved characters, as the service expects.
    static func formEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x2D, 0x2E, 0x5F, 0x7E:
                out.unicodeScalars.append(UnicodeScalar(byte))
            default: out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// `Tue, 01 Jul 2025 12:00:00 GMT`, the x-ms-date form.
    public static func httpDate(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
