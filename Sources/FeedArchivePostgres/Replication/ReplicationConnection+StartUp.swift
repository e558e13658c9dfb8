import FeedArchive
import Foundation
import NIOCore
import NIOSSL

/// The start of a replication connection: TLS as `sslmode` asks, the startup message, and the
/// authentication exchange (`PostgresAuthentication`), until the server is ready for a command.
extension ReplicationConnection {
    func negotiateTLS(_ settings: PostgresSourceSettings) async throws {
        var request = ByteBuffer()
        request.writeInteger(Int32(8))
        request.writeInteger(Int32(80_877_103))
        transport.send(request)
        guard let answer = try await nextByte() else { throw Failure.closed }
        guard answer == UInt8(ascii: "S") else {
            if settings.sslMode == "prefer" { return }
            throw Failure.unsupported(
                "the server at \(settings.endpoint) does not accept TLS, and source.sslmode is \(settings.sslMode)")
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if settings.sslMode != "verify-full" { configuration.certificateVerification = .none }  // libpq's prefer/require
        let context = try NIOSSLContext(configuration: configuration)
        let hostname = settings.sslMode == "verify-full" ? settings.host : nil
        guard let channel = transport as? ChannelTransport else { throw Failure.unsupported("TLS over a Unix socket") }
        try await channel.startTLS(context: context, serverHostname: hostname)
    }

    func startUp(_ settings: PostgresSourceSettings) async throws {
        var startup = ByteBuffer()
        startup.writeInteger(Int32(0))
        startup.writeInteger(Int32(196_608))  // protocol 3.0
        for (key, value) in [
            ("user", settings.user), ("database", settings.database), ("replication", "database"),
            ("application_name", "feedarchive"),
        ] {
            startup.writeNullTerminatedString(key)
            startup.writeNullTerminatedString(value)
        }
        startup.writeInteger(UInt8(0))
        startup.setInteger(Int32(startup.readableBytes), at: 0)
        transport.send(startup)
        var scram: PostgresAuthentication.SCRAM?
        func password() throws -> String {
            guard let password = settings.password else {
                throw ServerError(fields: [
                    UInt8(ascii: "C"): "28P01",
                    UInt8(ascii: "M"):
                        "the server asks user \"\(settings.user)\" for a password, and source.password is not set",
                ])
            }
            return password
        }
        while true {
            let message = try await nextMessage()
            var body = message.body
            switch message.type {
            case UInt8(ascii: "R"):
                guard let code = body.readInteger(as: Int32.self) else {
                    throw Failure.protocolViolation("short Authentication message")
                }
                switch code {
                case 0: continue
                case 3:
                    let text = try password()
                    send(type: "p") { $0.writeNullTerminatedString(text) }
                case 5:
                    guard let salt = body.readBytes(length: 4) else {
                        throw Failure.protocolViolation("md5 request without salt")
                    }
                    let answer = PostgresAuthentication.md5Answer(
                        user: settings.user, password: try password(), salt: salt)
                    send(type: "p") { $0.writeNullTerminatedString(answer) }
                case 10:
                    var mechanisms: [String] = []
                    while let name = body.readNullTerminatedString(), !name.isEmpty { mechanisms.append(name) }
                    guard mechanisms.contains("SCRAM-SHA-256") else {
                        throw Failure.unsupported(
                            "the server offers SASL mechanisms \(mechanisms); feedarchive speaks SCRAM-SHA-256")
                    }
                    var exchange = PostgresAuthentication.SCRAM(password: try password())
                    let first = exchange.first()
                    scram = exchange
                    send(type: "p") {
                        $0.writeNullTerminatedString("SCRAM-SHA-256")
                        $0.writeInteger(Int32(first.count))
                        $0.writeBytes(first)
                    }
                case 11:
                    guard var exchange = scram else { throw Failure.protocolViolation("SASLContinue before SASL") }
                    let final = try exchange.final(serverFirst: body.readBytes(length: body.readableBytes) ?? [])
                    scram = exchange
                    send(type: "p") { $0.writeBytes(final) }
                case 12:
                    guard let exchange = scram else { throw Failure.protocolViolation("SASLFinal before SASL") }
                    try exchange.verify(serverFinal: body.readBytes(length: body.readableBytes) ?? [])
                default:
                    throw Failure.unsupported(
                        "the server asks for authentication method \(code); feedarchive speaks trust, password, md5 and scram-sha-256"
                    )
                }
            case UInt8(ascii: "E"):
                throw Self.serverError(body)
            case UInt8(ascii: "Z"):
                return
            default:
                continue  // ParameterStatus, BackendKeyData, NoticeResponse, NegotiateProtocolVersion
            }
        }
    }
}
