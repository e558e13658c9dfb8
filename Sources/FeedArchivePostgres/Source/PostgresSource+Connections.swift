import FeedArchive
import Foundation
import NIOSSL
import PostgresNIO

/// The SQL connections (postgres-nio): the control connection for queries and
/// acknowledgements, and one for each peek or snapshot; every query within `query_timeout`.
extension PostgresSource {
    func connect() async throws -> PostgresConnection {
        let configuration: PostgresConnection.Configuration
        if let socket = settings.socketPath {
            configuration = .init(
                unixSocketPath: socket, username: settings.user, password: settings.password,
                database: settings.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch settings.sslMode {
            case "disable":
                tls = .disable
            case "verify-full":
                tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            default:
                var client = TLSConfiguration.makeClientConfiguration()
                client.certificateVerification = .none  // libpq's prefer/require: encrypted, not verified
                let context = try NIOSSLContext(configuration: client)
                tls = settings.sslMode == "require" ? .require(context) : .prefer(context)
            }
            configuration = .init(
                host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                database: settings.database, tls: tls)
        }
        connectionCount += 1
        let connection: PostgresConnection
        let (id, logger) = (connectionCount, logger)
        do {
            connection = try await withDeadline(settings.queryTimeout, "connect to \(settings.endpoint)") {
                try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
            }
        } catch {
            throw classify(error, doing: "connect to \(settings.endpoint)")
        }
        do {
            // Values are decoded as text: fix the session settings their text depends on.
            _ = try await run(
                on: connection,
                "SELECT set_config('TimeZone', 'UTC', false), set_config('DateStyle', 'ISO, YMD', false), set_config('bytea_output', 'hex', false), set_config('extra_float_digits', '1', false), set_config('application_name', 'feedarchive', false), set_config('standard_conforming_strings', 'on', false), set_config('statement_timeout', '0', false)",
                doing: "set up the session")
        } catch {
            try? await connection.close()
            throw classify(error, doing: "set up the session on \(settings.endpoint)")
        }
        return connection
    }

    func controlConnection() async throws -> PostgresConnection {
        if let control, !control.isClosed { return control }
        control = try await connect()
        return control!
    }

    /// Runs a query and collects its rows, within `source.query_timeout`; on a timeout the
    /// connection is closed (whatever hangs on it fails) and the error is transient.
    func run(on connection: PostgresConnection, _ query: PostgresQuery, doing what: String) async throws
        -> [PostgresRow]
    {
        let logger = logger
        do {
            return try await withDeadline(settings.queryTimeout, what) {
                try await connection.query(query, logger: logger).collect()
            }
        } catch let error as FeedArchiveError {
            if case .sourceUnavailable = error { try? await connection.close() }
            throw error
        }
    }

    /// Runs a query on the control connection and collects its rows; a lost connection is
    /// dropped so the next call reconnects.
    func rows(_ query: PostgresQuery, doing what: String) async throws -> [PostgresRow] {
        let connection = try await controlConnection()
        do {
            return try await run(on: connection, query, doing: what)
        } catch {
            let classified = classify(error, doing: what)
            if case .sourceUnavailable = classified {
                try? await connection.close()
                control = nil
            }
            throw classified
        }
    }
}
