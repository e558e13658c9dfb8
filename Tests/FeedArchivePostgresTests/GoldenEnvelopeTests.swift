import FeedArchive
import FeedArchiveTesting
import Foundation
import Testing

@testable import FeedArchivePostgres

/// pgoutput messages for fixed transactions (every change kind, every value encoding, replica
/// identities DEFAULT and FULL, unchanged TOAST, an origin, a truncate) give the recorded
/// envelope lines, positions, times and cursors, byte for byte.
@Suite struct GoldenEnvelopeTests {
    /// One pgoutput message, built field by field as the protocol documents it.
    struct Message {
        var bytes: [UInt8]
        init(_ type: Character) { bytes = [type.asciiValue!] }
        mutating func u8(_ value: UInt8) { bytes.append(value) }
        mutating func u16(_ value: UInt16) { bytes += [UInt8(value >> 8), UInt8(value & 0xFF)] }
        mutating func u32(_ value: UInt32) {
            for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((value >> UInt32(shift)) & 0xFF)) }
        }
        mutating func u64(_ value: UInt64) {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((value >> UInt64(shift)) & 0xFF)) }
        }
        mutating func cString(_ text: String) { bytes += Array(text.utf8) + [0] }
        /// TupleData: nil is a null, "\u{0}TOAST" an unchanged TOAST value, anything else text.
        mutating func tuple(_ values: [[UInt8]?]) {
            u16(UInt16(values.count))
            for value in values {
                if let value, value == Array("\u{0}TOAST".utf8) {
                    u8(UInt8(ascii: "u"))
                } else if let value {
                    u8(UInt8(ascii: "t"))
                    u32(UInt32(value.count))
                    bytes += value
                } else {
                    u8(UInt8(ascii: "n"))
                }
            }
        }
    }

    static func begin(final: UInt64, micros: Int64, xid: UInt32) -> [UInt8] {
        var m = Message("B")
        m.u64(final)
        m.u64(UInt64(bitPattern: micros - PGOutputDecoder.postgresEpoch))
        m.u32(xid)
        return m.bytes
    }

    static func commit(lsn: UInt64, end: UInt64, micros: Int64) -> [UInt8] {
        var m = Message("C")
        m.u8(0)
        m.u64(lsn)
        m.u64(end)
        m.u64(UInt64(bitPattern: micros - PGOutputDecoder.postgresEpoch))
        return m.bytes
    }

    static func relation(
        _ oid: UInt32, _ schema: String, _ name: String, identity: Character, _ columns: [(String, UInt32, Bool)]
    ) -> [UInt8] {
        var m = Message("R")
        m.u32(oid)
        m.cString(schema)
        m.cString(name)
        m.u8(identity.asciiValue!)
        m.u16(UInt16(columns.count))
        for (column, type, key) in columns {
            m.u8(key ? 1 : 0)
            m.cString(column)
            m.u32(type)
            m.u32(0xFFFF_FFFF)
        }
        return m.bytes
    }

    static func change(_ type: Character, _ oid: UInt32, old: (Character, [[UInt8]?])? = nil, new: [[UInt8]?]?)
        -> [UInt8]
    {
        var m = Message(type)
        m.u32(oid)
        if let old {
            m.u8(old.0.asciiValue!)
            m.tuple(old.1)
        }
        if let new {
            m.u8(UInt8(ascii: "N"))
            m.tuple(new)
        }
        return m.bytes
    }

    static func t(_ text: String) -> [UInt8]? { Array(text.utf8) }

    /// Columns of `public.orders` (REPLICA IDENTITY DEFAULT, key `id`) covering each encoding.
    static let orderColumns: [(String, UInt32, Bool)] = [
        ("id", 23, true), ("name", 25, false), ("price", 1700, false), ("paid", 16, false), ("at", 1184, false),
        ("local", 1114, false), ("data", 3802, false), ("raw", 17, false), ("tags", 1009, false), ("f", 701, false),
        ("d", 1082, false), ("u", 2950, false), ("big", 20, false), ("mood", 16_385, false), ("j", 114, false),
        ("r", 700, false), ("ints", 1007, false),
    ]

    static func orderRow(_ id: Int, name: [UInt8]?) -> [[UInt8]?] {
        [
            t("\(id)"), name, t("12.50"), t(id % 2 == 0 ? "t" : "f"), t("2026-12-04 17:00:00.123456+00"),
            t("2026-12-04 17:00:00"), t(#"{"a": [1, 2], "b": "x\"y"}"#), t("\\x00ff41"), t(#"{a,"b c",NULL,"d\"e"}"#),
            t(id % 3 == 0 ? "NaN" : id % 3 == 1 ? "-Infinity" : "1.5e-7"), t("2026-12-04"),
            t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            t("9007199254740993"), t("happy"), t(#"[1, "two"]"#), t("3.25"), t("{1,2,NULL}"),
        ]
    }

    static var messages: [[UInt8]] {
        let micros: Int64 = 1_796_403_600_123_456
        var list: [[UInt8]] = []
        var y = Message("Y")
        y.u32(16_385)
        y.cString("public")
        y.cString("mood")
        list.append(y.bytes)
        list.append(begin(final: 0x1_0000_0200, micros: micros, xid: 900))
        list.append(relation(16_400, "public", "orders", identity: "d", orderColumns))
        list.append(
            relation(
                16_401, "sales", "line \"items\"", identity: "f",
                [("order_id", 23, true), ("sku", 25, true), ("qty", 21, false), ("note", 25, false)]))
        list.append(change("I", 16_400, new: orderRow(1, name: t("caf\u{e9} \u{1}"))))
        list.append(change("I", 16_400, new: orderRow(2, name: [0x61, 0xFF, 0x62])))
        list.append(change("U", 16_400, new: orderRow(2, name: Array("\u{0}TOAST".utf8))))
        list.append(
            change(
                "U", 16_400,
                old: ("K", [t("2"), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil]),
                new: orderRow(3, name: nil)))
        list.append(change("I", 16_401, new: [t("3"), t("sku-1"), t("4"), nil]))
        list.append(
            change(
                "U", 16_401, old: ("O", [t("3"), t("sku-1"), t("4"), nil]),
                new: [t("3"), t("sku-1"), t("5"), t("more")]))
        list.append(change("D", 16_401, old: ("O", [t("3"), t("sku-1"), t("5"), t("more")]), new: nil))
        list.append(
            change(
                "D", 16_400,
                old: ("K", [t("1"), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil]),
                new: nil))
        list.append(commit(lsn: 0x1_0000_0200, end: 0x1_0000_0280, micros: micros))
        var origin = Message("O")
        origin.u64(0x0A0)
        origin.cString("upstream")
        list.append(begin(final: 0x1_0000_0300, micros: micros + 1_000_000, xid: 901))
        list.append(origin.bytes)
        var truncate = Message("T")
        truncate.u32(2)
        truncate.u8(3)
        truncate.u32(16_400)
        truncate.u32(16_401)
        list.append(truncate.bytes)
        list.append(commit(lsn: 0x1_0000_0300, end: 0x1_0000_0380, micros: micros + 1_000_000))
        return list
    }

    @Test func fixedTransactionsGiveTheRecordedEnvelopes() throws {
        var decoder = PGOutputDecoder()
        var page = PageBuilder(capacity: 1 << 16)
        for message in Self.messages {
            if case .commit(let end, _) = try message.withUnsafeBytes({ try decoder.decode($0, into: &page) }) {
                page.endTransaction(cursor: end.description)
            }
        }
        let records = page.page(resume: nil).records
        let text =
            records.map {
                "\($0.position.rawValue) \($0.timestamp.map(String.init) ?? "-") \($0.cursor ?? "-") \(String(decoding: $0.line, as: UTF8.self))"
            }.joined(separator: "\n") + "\n"
        let mismatch = try GoldenFile.mismatch(text, name: "pgoutput-envelopes.txt")
        #expect(mismatch == nil, "\(mismatch ?? "")")
        #expect(records.count == 10)
        for record in records { #expect(JSONText.isValid(record.line)) }
    }
}
