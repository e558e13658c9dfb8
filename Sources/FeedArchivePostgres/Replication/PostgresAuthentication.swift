import Crypto
import Foundation

/// The password answers of PostgreSQL's authentication exchange (protocol v3): md5 and
/// SCRAM-SHA-256 (RFC 5802/7677, without channel binding, as libpq does when it is not asked for).
enum PostgresAuthentication {
    /// `md5` + md5(md5(password + user) + salt), in lower-case hex.
    static func md5Answer(user: String, password: String, salt: [UInt8]) -> String {
        let inner = hex(Insecure.MD5.hash(data: Array((password + user).utf8)))
        return "md5" + hex(Insecure.MD5.hash(data: Array(inner.utf8) + salt))
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }

    /// One SCRAM-SHA-256 exchange, client side.
    struct SCRAM {
        let password: String
        let clientNonce: String
        private(set) var clientFirstBare = ""
        private(set) var expectedServerSignature: [UInt8] = []

        init(password: String, clientNonce: String? = nil) {
            self.password = password
            var random = SystemRandomNumberGenerator()
            self.clientNonce =
                clientNonce
                ?? Data((0..<18).map { _ in UInt8.random(in: 0...255, using: &random) }).base64EncodedString()
        }

        /// The client-first-message. The user name is empty: the server takes the startup
        /// message's user, as with libpq.
        mutating func first() -> [UInt8] {
            clientFirstBare = "n=,r=" + clientNonce
            return Array(("n,," + clientFirstBare).utf8)
        }

        /// The client-final-message for the server-first-message `serverFirst`.
        mutating func final(serverFirst: [UInt8]) throws -> [UInt8] {
            let text = String(decoding: serverFirst, as: UTF8.self)
            var fields: [Character: String] = [:]
            for part in text.split(separator: ",") where part.count >= 2 && part.dropFirst().first == "=" {
                fields[part.first!] = String(part.dropFirst(2))
            }
            guard let nonce = fields["r"], nonce.hasPrefix(clientNonce), nonce.count > clientNonce.count,
                let saltText = fields["s"], let salt = Data(base64Encoded: saltText),
                let iterations = fields["i"].flatMap({ Int($0) }), iterations > 0
            else {
                throw ReplicationConnection.Failure.protocolViolation("SCRAM: the server's first message is not valid")
            }
            let salted = Self.pbkdf2(password: Array(password.utf8), salt: Array(salt), iterations: iterations)
            let clientKey = Self.hmac(key: salted, Array("Client Key".utf8))
            let storedKey = Array(SHA256.hash(data: clientKey))
            let withoutProof = "c=biws,r=" + nonce
            let authMessage = Array((clientFirstBare + "," + text + "," + withoutProof).utf8)
            let signature = Self.hmac(key: storedKey, authMessage)
            let proof = zip(clientKey, signature).map { $0 ^ $1 }
            let serverKey = Self.hmac(key: salted, Array("Server Key".utf8))
            expectedServerSignature = Self.hmac(key: serverKey, authMessage)
            return Array((withoutProof + ",p=" + Data(proof).base64EncodedString()).utf8)
        }

        /// Checks the server-final-message: the server proves it knows the password too.
        func verify(serverFinal: [UInt8]) throws {
            let text = String(decoding: serverFinal, as: UTF8.self)
            guard let part = text.split(separator: ",").first(where: { $0.hasPrefix("v=") }),
                let signature = Data(base64Encoded: String(part.dropFirst(2))),
                Array(signature) == expectedServerSignature
            else {
                throw ReplicationConnection.Failure.protocolViolation(
                    "SCRAM: the server's signature does not match (is it the server it claims to be?)")
            }
        }

        static func hmac(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
        }

        /// PBKDF2-HMAC-SHA-256 with one block of output (SCRAM's Hi()).
        static func pbkdf2(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
            let key = SymmetricKey(data: password)
            var block = Array(HMAC<SHA256>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
            var result = block
            for _ in 1..<iterations {
                block = Array(HMAC<SHA256>.authenticationCode(for: block, using: key))
                for index in 0..<result.count { result[index] ^= block[index] }
            }
            return result
        }
    }
}
