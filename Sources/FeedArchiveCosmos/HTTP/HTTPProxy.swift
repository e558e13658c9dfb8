import Foundation

/// An HTTP proxy from the environment, read as curl reads it (mostly): `https_proxy` (or `HTTPS_PROXY`) for
/// an https endpoint, `http_proxy` for http (not `HTTP_PROXY`: CGI sets it from a request
/// header), then `all_proxy`/`ALL_PROXY`; `no_proxy`/`NO_PROXY` lists hosts to reach directly
/// (`*` alone for all; `example.com` also matches its subdomains; an address only itself; no
/// address ranges). An https
/// endpoint is reached through a `CONNECT` tunnel, an http one by sending the proxy the
/// absolute URL. The proxy itself is spoken to in plain HTTP (`http://[user:password@]host[:port]`;
/// port 1080 when none is given, as curl does).
struct HTTPProxy: Equatable, Sendable, CustomStringConvertible {
    var host: String
    var port: Int
    /// `Proxy-Authorization` for the user and password in the URL.
    var authorization: String?
    /// Where it came from, for messages: `https_proxy`, …
    var variable: String

    struct Invalid: Error, CustomStringConvertible {
        var variable: String
        var message: String
        var description: String { "\(variable): \(message)" }
    }

    /// The proxy for `endpoint`, or nil to connect directly.
    static func resolve(for endpoint: URL, environment: [String: String]) throws -> HTTPProxy? {
        let secure = endpoint.scheme == "https"
        let names = (secure ? ["https_proxy", "HTTPS_PROXY"] : ["http_proxy"]) + ["all_proxy", "ALL_PROXY"]
        guard let variable = names.first(where: { !(environment[$0] ?? "").isEmpty }), let value = environment[variable]
        else { return nil }
        let host = (endpoint.host ?? "").lowercased()
        let noProxy = [environment["no_proxy"], environment["NO_PROXY"]].compactMap { $0 }.first { !$0.isEmpty }
        if let noProxy, bypasses(host: host, list: noProxy) { return nil }
        let text = value.contains("://") ? value : "http://" + value
        guard let url = URLComponents(string: text), let proxyHost = url.host, !proxyHost.isEmpty else {
            throw Invalid(variable: variable, message: "'\(redacted(value))' is not a proxy URL (http://host:port)")
        }
        guard url.scheme?.lowercased() == "http" else {
            throw Invalid(
                variable: variable,
                message:
                    "'\(redacted(value))': only http:// proxies are supported (an https endpoint goes through a CONNECT tunnel, so its traffic stays encrypted)"
            )
        }
        var authorization: String?
        if let user = url.user {  // percent-decoded
            let credentials = user + ":" + (url.password ?? "")
            authorization = "Basic " + Data(credentials.utf8).base64EncodedString()
        }
        return HTTPProxy(host: proxyHost, port: url.port ?? 1080, authorization: authorization, variable: variable)
    }

    /// The value with any `user:password@` hidden, for messages.
    static func redacted(_ value: String) -> String {
        guard let at = value.lastIndex(of: "@") else { return value }
        let start = value.range(of: "://")?.upperBound ?? value.startIndex
        return at > start ? String(value[..<start]) + "***" + String(value[at...]) : value
    }

    static func bypasses(host: String, list: String) -> Bool {
        let host = host.hasSuffix(".") ? String(host.dropLast()) : host
        let entries = list.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }).map { $0.lowercased() }
        if entries == ["*"] { return true }
        let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
        for entry in entries {
            var name = entry
            if name.hasPrefix(".") { name.removeFirst() }
            if name.hasSuffix(".") { name.removeLast() }
            if let colon = name.lastIndex(of: ":"), !name.contains("]"), name.firstIndex(of: ":") == colon {
                name = String(name[..<colon])
            }  // host:port
            if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
            if name.isEmpty { continue }
            if host == name || (!isAddress && host.hasSuffix("." + name)) { return true }
        }
        return false
    }

    /// `host:port` as the proxy is asked for it.
    var description: String { "\(host):\(port)" }
}
